"""Cached VAE posteriors: a cached item names the cache row of exactly the pixels the loaded item has, and a run with
cached latents trains the same adapter as one that encodes every step (same seed, crops and flips)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ether_diffusion.data.dreambooth import DreamBoothDataset, collate
from ether_diffusion.dreambooth.train import train_dreambooth
from ether_diffusion.typed_config import ConfigError

from .conftest import DOG, smooth_image, tiny_config


@pytest.mark.parametrize("center_crop", [False, True])
def test_cached_rows_are_the_loaded_pixels(tmp_path, center_crop):
    wide = tmp_path / "class"
    wide.mkdir()
    for i in range(3):  # non-square class images: fixed only with a centre crop
        smooth_image(200 + i, (80, 48)).save(wide / f"c{i}.png")
    kwargs = dict(center_crop=center_crop, random_flip=True, class_dir=wide, seed=3)
    loaded, cached = DreamBoothDataset(DOG, 32, **kwargs), DreamBoothDataset(DOG, 32, cached=True, **kwargs)
    assert loaded.fixed_crops() is center_crop
    if not center_crop:
        return
    rows = list(cached.cache_images())
    assert len(rows) == 2 * (5 + 3)
    flips = set()
    for epoch in range(3):
        loaded.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(loaded)):
            a, b = loaded[i], cached[i]
            assert torch.equal(rows[b["instance_row"]], a["instance_pixels"])
            assert torch.equal(rows[b["class_row"]], a["class_pixels"])
            flips.add(b["instance_row"] % 2)
    assert flips == {0, 1}  # both orientations were drawn
    batch = collate([cached[0], cached[1]])
    assert batch["n_prior"] == 2 and len(batch["rows"]) == 4


@pytest.mark.parametrize("prior", [False, True])
def test_cached_run_trains_the_same_adapter(tmp_path, class_dir, prior):
    settings = dict(method="ether_plus", max_train_steps=3, train_batch_size=2, random_flip=True)
    if prior:
        settings.update(with_prior_preservation=True, class_prompt="a photo of dog", class_data_dir=str(class_dir),
                        num_class_images=2)
    runs = {}
    for cache in ("on", "off"):
        from .conftest import reset_accelerate

        reset_accelerate()
        result = train_dreambooth(tiny_config(tmp_path / cache, cache_latents=cache, **settings))
        runs[cache] = (result, load_file(str(result["adapter_dir"] / "adapter_model.safetensors")))
    (on, w_on), (off, w_off) = runs["on"], runs["off"]
    assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
    assert ("prior_loss" in on) == prior
    for k in w_off:
        torch.testing.assert_close(w_on[k], w_off[k], rtol=1e-5, atol=1e-6)


def test_cache_on_refuses_random_crops_of_wide_images(tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    smooth_image(1, (80, 48)).save(wide / "a.png")
    with pytest.raises(ConfigError, match="cache_latents on needs deterministic crops"):
        train_dreambooth(tiny_config(tmp_path / "run", instance_data_dir=str(wide), cache_latents="on"))


def test_persistent_workers_see_each_epoch():
    """Loader workers that live across epochs draw each epoch's crops and flips as the main process would."""
    from torch.utils.data import DataLoader

    def epochs(workers):
        ds = DreamBoothDataset(DOG, 32, random_flip=True, seed=5)
        loader = DataLoader(ds, batch_size=5, collate_fn=collate, num_workers=workers,
                            persistent_workers=workers > 0)
        out = []
        for epoch in range(3):
            ds.set_epoch(epoch)
            out.append(next(iter(loader))["pixels"])
        return out

    alone, workers = epochs(0), epochs(2)
    assert not torch.equal(alone[0], alone[1])  # epochs differ
    for a, b in zip(alone, workers):
        assert torch.equal(a, b)
