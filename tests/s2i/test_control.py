"""The control encoder and its conv_in hook: ControlNet parity, zero-init equivalence, batching under guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ether_diffusion.typed_config import ConfigError
from ether_diffusion.models.control import (ControlEncoder, ControlEncoderConfig, ControlledUNet,
                                            load_control_encoder, save_control_encoder)
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.models.unet_configs import SD15_UNET, build_unet
from ether_diffusion.s2i.model import control_channels
from ether_diffusion.s2i.sampling import sample_from_maps


def _tiny():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    widths = control_channels(pipe.vae_scale_factor)  # the tiny VAE downsamples 2x: (16, 32)
    return pipe, ControlledUNet(pipe.unet, ControlEncoder(ControlEncoderConfig(pipe.unet.config.block_out_channels[0],
                                                                               3, widths)))


def _maps(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))  # (n, 3, R, R) in [0, 1]


def test_sd15_shapes_and_controlnet_parity():
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    encoder = ControlEncoder.for_unet(build_unet(SD15_UNET, device="meta"))  # reads block_out_channels[0]
    assert encoder.config.out_channels == 320 and encoder.config.downscale == 8
    assert encoder(torch.rand(1, 3, 512, 512)).shape == (1, 320, 64, 64)
    assert control_channels(8) == (16, 32, 96, 256)
    reference = ControlNetConditioningEmbedding(320, 3, (16, 32, 96, 256))
    torch.nn.init.normal_(reference.conv_out.weight)  # a non-zero output to compare
    encoder.load_state_dict(reference.state_dict())  # same parameter names and shapes as diffusers'
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(encoder(x), reference(x), rtol=0, atol=0)


def test_zero_init_controlled_equals_uncontrolled():
    pipe, controlled = _tiny()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    text = torch.randn(2, 77, 32)
    with torch.no_grad():
        plain = pipe.unet(x, t, text).sample
        ctrl = controlled(x, t, text, control=_maps()).sample
        torch.testing.assert_close(ctrl, plain, rtol=0, atol=0)  # step 0: exactly the base model
        torch.nn.init.normal_(controlled.control_encoder.conv_out.weight, std=0.1)
        assert (controlled(x, t, text, control=_maps()).sample - plain).abs().max() > 1e-3  # the map now acts
        torch.testing.assert_close(pipe.unet(x, t, text).sample, plain)  # no condition set: the plain UNet


def test_zero_init_pipeline_images_equal_base():
    pipe, controlled = _tiny()
    base = pipe(["a house", "a street"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                num_inference_steps=2, height=32, width=32, output_type="np").images
    ctrl = sample_from_maps(pipe, controlled, _maps(), ["a house", "a street"], [0, 1], 2, 7.5)
    assert [im.size for im in ctrl] == [(32, 32)] * 2
    assert np.abs(np.round(base * 255) - np.stack([np.asarray(im, np.float64) for im in ctrl])).max() <= 1


def test_each_map_conditions_its_own_image_under_guidance():
    """Classifier-free guidance doubles the batch; map i must condition both halves of sample i."""
    pipe, controlled = _tiny()
    torch.nn.init.normal_(controlled.control_encoder.conv_out.weight, std=0.5)
    maps, prompts = _maps(3), ["a house", "a street", "a plane"]
    together = sample_from_maps(pipe, controlled, maps, prompts, [0, 1, 2], 2, 9.0)
    alone = [sample_from_maps(pipe, controlled, maps[i:i + 1], prompts[i:i + 1], [i], 2, 9.0)[0] for i in range(3)]
    for a, b in zip(together, alone):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1
    swapped = sample_from_maps(pipe, controlled, maps.flip(0), prompts, [0, 1, 2], 2, 9.0)
    assert not np.array_equal(np.asarray(swapped[0]), np.asarray(together[0]))  # the map matters


def test_bad_condition_shapes_and_widths():
    pipe, controlled = _tiny()
    x, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    with pytest.raises(ValueError, match=r"pass maps at the image resolution \(2x the latent size\)"):
        controlled(x, 1, text, control=_maps(2, size=16))
    with pytest.raises(ValueError, match="3 condition map"):
        controlled(x, 1, text, control=_maps(3))
    with pytest.raises(ConfigError, match="outputs 320 channels but the UNet's first block has 32"):
        ControlledUNet(pipe.unet, ControlEncoder(ControlEncoderConfig(320)))
    with pytest.raises(ConfigError, match="downsample 8x but the VAE downsamples 2x"):
        control_channels(2, (16, 32, 96, 256))


def test_encoder_save_load_round_trip(tmp_path):
    encoder = ControlEncoder(ControlEncoderConfig(32, 3, (16, 32)))
    torch.nn.init.normal_(encoder.conv_out.weight)
    save_control_encoder(encoder, tmp_path, method="none")
    loaded = load_control_encoder(tmp_path)
    assert loaded.config == encoder.config
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), encoder(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="has no control_encoder_config.json"):
        load_control_encoder(tmp_path / "elsewhere")
