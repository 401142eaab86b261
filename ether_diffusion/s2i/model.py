"""An S2I model = frozen UNet + adapter (ether / ether_plus / oft / naive / lora, or none) + control encoder.

Saved as one folder: the adapter in its own format (`save_ether`'s, or PEFT's for LoRA; nothing for ``none``),
``control_encoder.safetensors`` + ``control_encoder_config.json`` (architecture and the method) beside it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..typed_config import ConfigError
from ..models.control import (HINT_CHANNELS, ControlEncoder, ControlEncoderConfig, ControlledUNet,
                              load_control_encoder, read_control_meta, save_control_encoder, unet_width)
from ..training.adapters import add_adapter_from_config, load_adapter, merge_adapter, save_adapter
from .config import NO_ADAPTER


def control_channels(vae_scale_factor: int, channels: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Encoder widths whose stride-2 convs bring the map to the latent grid: ControlNet's (16, 32, 96, 256) for SD's
    8x VAE; its first log2(f) + 1 widths for a VAE that downsamples f x (the tiny model: f = 2)."""
    steps = int(round(math.log2(vae_scale_factor)))
    if 2 ** steps != vae_scale_factor:
        raise ConfigError(f"the VAE downsamples {vae_scale_factor}x, not a power of 2; the control encoder cannot "
                          "match its latent grid")
    if channels is None:
        if steps + 1 > len(HINT_CHANNELS):
            raise ConfigError(f"the VAE downsamples {vae_scale_factor}x; pass control_channels with {steps + 1} widths")
        return HINT_CHANNELS[: steps + 1]
    if len(channels) != steps + 1:
        raise ConfigError(f"control_channels {list(channels)} downsample {2 ** (len(channels) - 1)}x but the VAE "
                          f"downsamples {vae_scale_factor}x; give {steps + 1} widths")
    return tuple(channels)


def build_s2i_model(unet: nn.Module, cfg, vae_scale_factor: int) -> tuple[ControlledUNet, list, list]:
    """Freeze ``unet``, add ``cfg.method``'s adapter and a fresh control encoder (fp32, on the UNet's device).

    Returns (controlled UNet, adapter parameters, encoder parameters); all trainable parameters are fp32.
    """
    if cfg.method == NO_ADAPTER:
        unet.requires_grad_(False)
        adapter_params: list[nn.Parameter] = []
    else:
        adapter_params = add_adapter_from_config(unet, cfg)
    widths = control_channels(vae_scale_factor, cfg.control_channels)
    encoder = ControlEncoder(ControlEncoderConfig(unet_width(unet), 3, widths)).to(unet.device, torch.float32)
    encoder.requires_grad_(True)
    return ControlledUNet(unet, encoder), adapter_params, list(encoder.parameters())


def save_s2i_model(controlled: ControlledUNet, method: str, folder: str | os.PathLike) -> Path:
    """Adapter files (none for ``none``) + control encoder in ``folder``; returns the folder."""
    folder = Path(folder)
    if method != NO_ADAPTER:
        save_adapter(controlled.unet, method, folder)
    return save_control_encoder(controlled.control_encoder, folder, method=method, library_version=__version__)


def load_s2i_model(unet: nn.Module, folder: str | os.PathLike, merge: bool = False) -> tuple[ControlledUNet, str]:
    """Load a `save_s2i_model` folder onto ``unet``: (controlled UNet with the encoder on the UNet's device, method).

    ``merge`` folds the adapter into the weights (base-model speed; the control hook is unaffected).
    """
    meta = read_control_meta(folder)
    method = meta.get("method", NO_ADAPTER)
    if method != NO_ADAPTER:
        kind = load_adapter(unet, folder)
        if kind != method:
            raise ConfigError(f"{folder}: the control encoder was trained with method {method!r} but the adapter "
                              f"there is {kind!r}; the folder mixes two runs")
        if merge:
            merge_adapter(unet, method)
    encoder = load_control_encoder(folder).to(unet.device, unet.dtype)
    unet.requires_grad_(False)
    encoder.requires_grad_(False)
    return ControlledUNet(unet, encoder), method
