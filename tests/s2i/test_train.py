"""2-step S2I runs on the tiny model with the shipped ADE20K pairs; save -> load -> generate; exact resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ether_diffusion.models.control import ENCODER_CONFIG, ENCODER_WEIGHTS
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.s2i.config import S2I_METHODS, S2IConfig
from ether_diffusion.s2i.model import build_s2i_model, load_s2i_model, save_s2i_model
from ether_diffusion.s2i.sampling import sample_from_maps
from ether_diffusion.s2i.train import CONFIG_FILE, train_s2i
from ether_diffusion.training.adapters import save_adapter
from ether_diffusion.typed_config import load_config

from .conftest import tiny_config


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])  # (N, H, W, 3)


@pytest.mark.parametrize("method", ["ether", "ether_plus", "none"])
def test_two_steps(tmp_path, method):
    cfg = tiny_config(tmp_path / "run", method=method, report_to="tensorboard" if method == "ether" else "none",
                      mixed_precision="bf16" if method == "none" else "no")  # bf16: frozen weights, fp32 encoder
    result = train_s2i(cfg)
    assert result["step"] == 2 and np.isfinite(result["loss"])
    model = result["model_dir"]
    assert load_config(S2IConfig, model / CONFIG_FILE) == cfg  # the resolved config, beside the weights
    assert json.loads((model / ENCODER_CONFIG).read_text())["method"] == method
    # the zero conv has moved: the map now reaches the UNet
    assert load_file(str(model / ENCODER_WEIGHTS))["conv_out.weight"].abs().max() > 0
    if method == "none":
        assert not (model / "adapter_model.safetensors").exists()
    else:  # the adapter trained too
        fresh = tiny_pipeline().unet
        build_s2i_model(fresh, cfg, 2)
        init = load_file(str(save_adapter(fresh, method, tmp_path / "init") / "adapter_model.safetensors"))
        trained = load_file(str(model / "adapter_model.safetensors"))
        assert init.keys() == trained.keys() and any(not torch.equal(init[k], trained[k]) for k in init)
    grid = Image.open(tmp_path / "run" / "validation" / "step000002.png")
    assert grid.size == (2 * 32, 2 * 32)  # 2 validation maps, each row: map | generated
    if method == "ether":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        tags = set()
        for path in (tmp_path / "run" / "logs").rglob("events.out.tfevents*"):
            acc = EventAccumulator(str(path), size_guidance={"images": 0}).Reload()
            tags |= set(acc.Tags()["images"]) | set(acc.Tags()["scalars"])
        assert {"validation (map | generated)", "loss", "lr"} <= tags


@pytest.mark.parametrize("method", S2I_METHODS)
def test_save_load_generate_reproduces(tmp_path, method):
    cfg = tiny_config(tmp_path, method=method, lora_rank=2)
    pipe = tiny_pipeline()
    controlled, adapter_params, encoder_params = build_s2i_model(pipe.unet, cfg, pipe.vae_scale_factor)
    torch.manual_seed(1)
    with torch.no_grad():  # a "trained" model: every trainable parameter moved
        for p in adapter_params + encoder_params:
            p.add_(0.05 * torch.randn_like(p))
    pipe.set_progress_bar_config(disable=True)
    maps = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    args = (maps, ["a house", "a street"], [7, 8], 2, 9.0)
    before = _pixels(sample_from_maps(pipe, controlled, *args))
    save_s2i_model(controlled, method, tmp_path / "model")

    fresh = tiny_pipeline()
    fresh.set_progress_bar_config(disable=True)
    loaded, loaded_method = load_s2i_model(fresh.unet, tmp_path / "model")
    assert loaded_method == method
    np.testing.assert_array_equal(_pixels(sample_from_maps(fresh, loaded, *args)), before)
    merged_pipe = tiny_pipeline()
    merged_pipe.set_progress_bar_config(disable=True)
    merged, _ = load_s2i_model(merged_pipe.unet, tmp_path / "model", merge=True)
    assert np.abs(_pixels(sample_from_maps(merged_pipe, merged, *args)) - before).max() <= 2  # merging: speed only
    plain = _pixels(fresh(["a house", "a street"], generator=[torch.Generator().manual_seed(s) for s in (7, 8)],
                          num_inference_steps=2, guidance_scale=9.0, height=32, width=32).images)
    assert np.abs(plain - before).max() > 2  # (without the map the images differ: the test can fail)


def test_resume_continues_exactly(tmp_path):
    common = dict(method="ether_plus", max_train_steps=3, checkpointing_steps=2, validation_split=None)
    straight = train_s2i(tiny_config(tmp_path / "a", **common))["model_dir"]
    train_s2i(tiny_config(tmp_path / "b", **{**common, "max_train_steps": 2}))  # "interrupted" after step 2
    assert (tmp_path / "b" / "checkpoint-2" / "COMPLETE").is_file()
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = train_s2i(tiny_config(tmp_path / "b", resume_from_checkpoint="latest", **common))
    assert resumed["step"] == 3
    for name in ("adapter_model.safetensors", ENCODER_WEIGHTS):
        a, b = load_file(str(straight / name)), load_file(str(resumed["model_dir"] / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
