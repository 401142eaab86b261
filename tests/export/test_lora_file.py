"""An exported LoRA file in a plain diffusers pipeline (``pipe.load_lora_weights``, no ether-diffusion code on it)
computes what the unmerged ETHER model computes: the UNet output and the images for a fixed seed."""

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ether_diffusion as ed
from ether_diffusion.export import ExportError, export_peft_lora, read_lora_metadata
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.state import get_state
from ether_diffusion.state import UnknownAdapterError

from .helpers import ether_pipeline, images, lora_pipeline, relative, unet_out


@pytest.fixture(scope="module", params=["ether", "ether_plus"])
def adapted(request):
    pipe = ether_pipeline(request.param)
    return request.param, pipe, unet_out(pipe), images(pipe)


@pytest.fixture(scope="module")
def base():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return unet_out(pipe), images(pipe)


def lora_layers(unet):
    return {name for name, m in unet.named_modules() if hasattr(m, "lora_A") and "default_0" in m.lora_A}


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_load_lora_weights_reproduces_the_ether_model(adapted, base, format, tmp_path):
    method, pipe, want, want_images = adapted
    file = ed.export_lora(pipe.unet, tmp_path / "adapter.safetensors", format=format)
    plain = lora_pipeline(file)
    assert lora_layers(plain.unet) == set(get_state(pipe.unet).layers)  # diffusers placed every layer
    got = unet_out(plain)
    assert relative(got, want) < 1e-5
    assert relative(base[0], want) > 1e-2  # the adapter changes the output: the match is not the base model's
    np.testing.assert_allclose(images(plain), want_images, atol=1e-4, rtol=0)
    assert np.abs(base[1] - want_images).max() > 1e-2


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_keys_ranks_and_metadata(adapted, format, tmp_path):
    method, pipe, _, _ = adapted
    rank = {"ether": 4, "ether_plus": 16}[method]
    file = ed.export_lora(pipe.unet, tmp_path / "a.safetensors", format=format, base_model="my/base")
    tensors = load_file(str(file))
    state = get_state(pipe.unet)
    for layer, (f, d) in state.layers.items():
        if format == "diffusers":
            down, up = tensors.pop(f"unet.{layer}.lora_A.weight"), tensors.pop(f"unet.{layer}.lora_B.weight")
        else:
            name = "lora_unet_" + layer.replace(".", "_")
            down, up = tensors.pop(f"{name}.lora_down.weight"), tensors.pop(f"{name}.lora_up.weight")
            assert tensors.pop(f"{name}.alpha").item() == rank  # alpha / rank = 1
        assert down.shape == (rank, d) and up.shape == (f, rank) and down.dtype == torch.float32
    assert not tensors  # nothing else in the file
    meta = read_lora_metadata(file)
    assert {k: meta[k] for k in ("method", "n_blocks", "rank", "lora_format", "base_model")} == {
        "method": method, "n_blocks": "4", "rank": str(rank), "lora_format": format, "base_model": "my/base"}
    assert meta["ether_diffusion_version"] == ed.__version__ and float(meta["max_relative_error"]) < 1e-6  # fp32 rounding


def test_fp16_export(tmp_path):
    """fp16 factors: half the bytes; the UNet output moves by about 1e-4 of its size (fp32: below 1e-6)."""
    pipe = ether_pipeline("ether_plus")
    want = unet_out(pipe)
    f32 = ed.export_lora(pipe.unet, tmp_path / "f32.safetensors")
    f16 = ed.export_lora(pipe.unet, tmp_path / "f16.safetensors", dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in load_file(str(f16)).values())
    assert 1e-4 < float(read_lora_metadata(f16)["max_relative_error"]) < 1e-3  # fp16 rounding of the factors
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    err32, err16 = relative(unet_out(lora_pipeline(f32)), want), relative(unet_out(lora_pipeline(f16)), want)
    assert err32 < 2e-6 and 1e-5 < err16 < 3e-4, (err32, err16)


@pytest.mark.parametrize("method", ["oft", "naive"])
def test_oft_and_naive_by_svd(method, tmp_path, caplog):
    pipe = ether_pipeline(method)
    with pytest.raises(ExportError, match="pass a rank"):
        ed.export_lora(pipe.unet, tmp_path / "x.safetensors")
    want = unet_out(pipe)
    full = ed.export_lora(pipe.unet, tmp_path / "full.safetensors", format="kohya", rank=64)  # the widest layer
    assert relative(unet_out(lora_pipeline(full)), want) < 1e-5
    with caplog.at_level(logging.WARNING, logger="ether_diffusion.export"):
        low = ed.export_lora(pipe.unet, tmp_path / "low.safetensors", rank=2)
    error = float(read_lora_metadata(low)["max_relative_error"])
    assert error > 0.05 and f"worst relative error {error:.3g}" in caplog.text
    assert relative(unet_out(lora_pipeline(low)), want) > 1e-4  # truncation shows in the output


def test_refusals(tmp_path):
    pipe = ether_pipeline("ether")
    with pytest.raises(UnknownAdapterError, match="'dog' is not loaded"):
        ed.export_lora(pipe.unet, tmp_path / "x.safetensors", adapter_name="dog")
    with pytest.raises(ExportError, match="unknown LoRA format 'comfy'"):
        ed.export_lora(pipe.unet, tmp_path / "x.safetensors", format="comfy")
    with pytest.raises(ExportError, match="ends in .safetensors"):
        ed.export_lora(pipe.unet, tmp_path / "x.pt")
    ed.merge_ether(pipe.unet)
    with pytest.raises(ed.EtherError, match="merged"):
        ed.export_lora(pipe.unet, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_a_named_adapter(tmp_path):
    pipe = ether_pipeline("ether")
    ed.save_ether(pipe.unet, tmp_path / "first")
    other = ether_pipeline("ether", seed=7)
    ed.load_ether(other.unet, tmp_path / "first", adapter_name="first")  # active now; "default" is the seed-7 one
    file = ed.export_lora(other.unet, tmp_path / "default.safetensors", adapter_name="default")
    ed.set_active_adapter(other.unet, "default")
    assert relative(unet_out(lora_pipeline(file)), unet_out(other)) < 1e-5
    assert relative(unet_out(pipe), unet_out(other)) > 1e-2


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_a_peft_lora_is_rekeyed_with_its_scale(format, tmp_path):
    from ether_diffusion.training.adapters import add_adapter, load_adapter, save_adapter

    trained = tiny_pipeline()
    add_adapter(trained.unet, "lora", init_seed=0, lora_rank=4, lora_alpha=8)  # scale alpha / r = 2
    with torch.no_grad():
        for name, p in trained.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    want = unet_out(trained)
    save_adapter(trained.unet, "lora", tmp_path / "lora")
    loaded = tiny_pipeline()
    load_adapter(loaded.unet, tmp_path / "lora")
    file = export_peft_lora(loaded.unet, tmp_path / "lora.safetensors", format=format)
    assert read_lora_metadata(file)["method"] == "lora" and read_lora_metadata(file)["rank"] == "4"
    assert relative(unet_out(lora_pipeline(file)), want) < 1e-5
    assert relative(unet_out(tiny_pipeline()), want) > 1e-2
