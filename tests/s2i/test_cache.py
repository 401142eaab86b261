"""The S2I cache folder: a cached run trains the same model as one that encodes every step; entries are reused
across runs and rebuilt only for what changed (an image, the resolution)."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ether_diffusion.data.ade20k import ADE20KDataset, color_ids, condition_tensor, scan_ade20k
from ether_diffusion.models.control import ENCODER_WEIGHTS
from ether_diffusion.s2i.train import train_s2i

from .conftest import CAPTIONS, tiny_config


def _reset():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_device_colouring_is_the_palette_map():
    ids = torch.randint(0, 151, (2, 5, 7))
    expected = torch.stack([condition_tensor(x.numpy()) for x in ids])
    assert torch.equal(color_ids(ids.to(torch.uint8)), expected)


def test_cached_rows_are_the_loaded_pairs(ade_copy):
    samples = scan_ade20k(ade_copy, "validation", CAPTIONS)
    loaded = ADE20KDataset(samples, 32, "center", random_flip=True, seed=1)
    cached = ADE20KDataset(samples, 32, "center", random_flip=True, seed=1, cached=True)
    pairs = {i: (p, ids) for i, p, ids in cached.cache_pairs()}
    for epoch in range(3):
        loaded.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(samples)):
            row = cached[i]["row"]
            pixels, ids = pairs[row // 2]
            assert torch.equal(pixels[row % 2], loaded[i]["pixels"])
            assert torch.equal(color_ids(ids[row % 2][None])[0], loaded[i]["condition"])


def test_cached_run_equals_encoding_run(tmp_path, ade_copy):
    cache = tmp_path / "cache"
    settings = dict(data_root=str(ade_copy), method="ether", random_flip=True, crop="center", max_train_steps=3,
                    latent_cache_dir=str(cache))
    weights = {}
    for mode in ("on", "off"):
        _reset()
        result = train_s2i(tiny_config(tmp_path / mode, cache_latents=mode, **settings))
        weights[mode] = {**load_file(str(result["model_dir"] / "adapter_model.safetensors")),
                         **load_file(str(result["model_dir"] / ENCODER_WEIGHTS))}
    for k in weights["off"]:
        torch.testing.assert_close(weights["on"][k], weights["off"][k], rtol=0, atol=1e-4)  # Adam on ~1e-8 input noise


def test_cache_folder_is_reused_and_rebuilt_for_what_changed(tmp_path, ade_copy):
    from ether_diffusion.models.tiny import tiny_pipeline
    from ether_diffusion.s2i.cache import build_table

    pipe, cache = tiny_pipeline(), tmp_path / "cache"
    samples = scan_ade20k(ade_copy, "validation", CAPTIONS)
    dataset = ADE20KDataset(samples, 32, "none", random_flip=True)
    rows, texts = build_table(dataset, pipe, "cpu", cache, show=False)
    assert len(rows) == 8 and len(texts) == 4  # 4 pairs x 2 orientations; one caption each
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(entries) == 4

    again, _ = build_table(dataset, pipe, "cpu", cache, show=False)  # read back, nothing written
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries
    for k in rows.tensors:
        assert torch.equal(again.tensors[k], rows.tensors[k])

    photo = sorted((ade_copy / "images" / "validation").iterdir())[0]  # a changed photo: one new entry
    Image.open(photo).transpose(Image.FLIP_TOP_BOTTOM).save(photo)
    build_table(dataset, pipe, "cpu", cache, show=False)
    now = {p.name for p in cache.iterdir()}
    assert len(now - set(entries)) == 1 and set(entries) <= now

    build_table(ADE20KDataset(samples, 48, "none", random_flip=True), pipe, "cpu", cache, show=False)
    assert len({p.name for p in cache.iterdir()} - now) == 4  # another resolution: all new

    other = tiny_pipeline(seed=1)  # other weights: all new
    build_table(dataset, other, "cpu", cache, show=False)
    assert len({p.name for p in cache.iterdir()}) == 4 + 1 + 4 + 4


def test_random_crops_are_not_cached(tmp_path):
    from ether_diffusion.typed_config import ConfigError

    with pytest.raises(ConfigError, match="crop is 'random'"):
        train_s2i(tiny_config(tmp_path / "run", crop="random", cache_latents="on"))
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
