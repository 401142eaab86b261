"""2-step DreamBooth runs on the tiny model, in process: every method, with and without prior preservation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.training.adapters import add_adapter_from_config, load_adapter, merge_adapter, save_adapter
from ether_diffusion.typed_config import load_config
from ether_diffusion.dreambooth.config import CONFIG_FILE, DreamBoothConfig
from ether_diffusion.dreambooth.train import train_dreambooth
from ether_diffusion.training.loss import diffusion_target
from ether_diffusion.training.options import ADAPTER_METHODS

from .conftest import tiny_config


def _weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def _image(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = pipe("a qwe dog in the snow", generator=g, num_inference_steps=1, height=64, width=64, output_type="np")
    return out.images[0]  # (64, 64, 3) in [0, 1]


CASES = [pytest.param(m, p, id=f"{m}-{'prior' if p else 'plain'}",
                      marks=() if (m, p) in (("ether", False), ("lora", False)) else pytest.mark.slow)
         for m in ADAPTER_METHODS for p in (False, True)]


@pytest.mark.parametrize("method,prior", CASES)
def test_two_steps_train_save_load_generate(tmp_path, method, prior, class_dir):
    cfg = tiny_config(tmp_path / "run", method=method, with_prior_preservation=prior, lora_rank=2,
                      class_prompt="a photo of dog" if prior else None,
                      class_data_dir=str(class_dir) if prior else None, num_class_images=2)
    result = train_dreambooth(cfg)
    assert result["step"] == 2 and np.isfinite(result["loss"])
    assert ("prior_loss" in result) == prior
    adapter = result["adapter_dir"]
    assert load_config(DreamBoothConfig, adapter / CONFIG_FILE) == cfg  # the resolved config, beside the weights

    # trained: the saved adapter differs from the same adapter at initialisation
    fresh = tiny_pipeline().unet
    add_adapter_from_config(fresh, cfg)
    init, trained = _weights(save_adapter(fresh, method, tmp_path / "init")), _weights(adapter)
    assert init.keys() == trained.keys()
    assert all(t.dtype == torch.float32 for t in trained.values())
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    if prior:
        return
    # loads into a fresh pipeline and generates; merging changes nothing but the speed
    pipe = tiny_pipeline()
    assert load_adapter(pipe.unet, adapter) == method
    unmerged = _image(pipe)
    merge_adapter(pipe.unet, method)
    merged = _image(pipe)
    assert unmerged.shape == (64, 64, 3) and np.isfinite(unmerged).all()
    np.testing.assert_allclose(merged, unmerged, atol=2e-3)


def test_gradient_checkpointing_and_v_prediction(tmp_path):
    """Checkpointed activations give exactly the same update; v-prediction trains."""
    runs = {}
    for ckpt in (False, True):
        cfg = tiny_config(tmp_path / f"run{ckpt}", method="ether_plus", gradient_checkpointing=ckpt,
                          prediction_type="v_prediction")
        runs[ckpt] = _weights(train_dreambooth(cfg)["adapter_dir"])
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], rtol=1e-5, atol=1e-6)


def test_bf16_keeps_adapter_fp32(tmp_path):
    result = train_dreambooth(tiny_config(tmp_path / "run", method="oft", mixed_precision="bf16"))
    assert np.isfinite(result["loss"])
    assert all(t.dtype == torch.float32 for t in _weights(result["adapter_dir"]).values())


def test_v_prediction_target():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(prediction_type="v_prediction")
    x, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(diffusion_target(sched, x, noise, t), a * noise - s * x)
    sched.register_to_config(prediction_type="epsilon")
    assert diffusion_target(sched, x, noise, t) is noise
