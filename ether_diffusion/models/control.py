"""The small control encoder of semantic-map-to-image training, and its attachment to any `UNet2DConditionModel`.

`ControlEncoder` is ControlNet's hint encoder (lllyasviel/ControlNet ``cldm.py`` ``input_hint_block``, the same stack
as OFT's released controllable-generation code and diffusers' ``ControlNetConditioningEmbedding``, diffusers 0.42):
3x3 convs with SiLU, three stride-2 convs (512 px map -> 64x64 latent grid), and a zero-initialised 3x3 conv to the
UNet's first block width (320 on SD 1.5). Parameter names equal diffusers', so either loads the other's weights.

`ControlledUNet` adds the encoder's output to ``unet.conv_in``'s output through a forward hook (where OFT adds its
control after the first input block), so diffusers' UNet code is untouched. The zero conv makes a fresh controlled
model equal the plain one. The condition is given per call::

    controlled = ControlledUNet(unet, ControlEncoder.for_unet(unet))
    controlled(noisy, t, text, control=maps)                   # training: one module to prepare / wrap in DDP
    with controlled.condition(maps):                            # sampling: the pipeline calls the plain unet
        images = pipe(prompts, ...).images
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..typed_config import ConfigError
from ..names import HINT_CHANNELS  # noqa: F401  (ControlNet's input_hint_block widths)

ENCODER_WEIGHTS = "control_encoder.safetensors"
ENCODER_CONFIG = "control_encoder_config.json"
ENCODER_FORMAT = "ether-diffusion-control-encoder"


@dataclass(frozen=True)
class ControlEncoderConfig:
    """Architecture of a `ControlEncoder` (saved beside its weights)."""

    out_channels: int  # the UNet's block_out_channels[0]
    in_channels: int = 3  # RGB colour-coded map
    block_out_channels: tuple[int, ...] = HINT_CHANNELS  # one stride-2 conv between consecutive widths

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        if self.out_channels < 1 or self.in_channels < 1:
            raise ConfigError(f"control encoder channels must be >= 1, got in={self.in_channels}, "
                              f"out={self.out_channels}")
        if len(self.block_out_channels) < 1 or min(self.block_out_channels) < 1:
            raise ConfigError(f"block_out_channels must be positive widths, got {list(self.block_out_channels)}")

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class ControlEncoder(nn.Module):
    """(B, 3, H, W) map in [0, 1] -> (B, out_channels, H/8, W/8) residual for the UNet's first feature map."""

    def __init__(self, config: ControlEncoderConfig):
        super().__init__()
        self.config = config
        widths = config.block_out_channels
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.Conv2d(a, a, 3, padding=1))
            self.blocks.append(nn.Conv2d(a, b, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(widths[-1], config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # zero conv: the controlled UNet starts as the plain one
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def for_unet(cls, unet: nn.Module, block_out_channels: tuple[int, ...] = HINT_CHANNELS,
                 in_channels: int = 3) -> "ControlEncoder":
        return cls(ControlEncoderConfig(unet_width(unet), in_channels, tuple(block_out_channels)))

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(condition))  # (B, 16, H, W)
        for conv in self.blocks:
            x = F.silu(conv(x))  # widths 16 -> 32 -> 96 -> 256, H -> H/8
        return self.conv_out(x)  # (B, C, H/8, W/8), zero at init


def unet_width(unet: nn.Module) -> int:
    """Channels of the UNet's ``conv_in`` output: ``unet.config.block_out_channels[0]`` (320 on SD 1.5)."""
    width = int(unet.config.block_out_channels[0])
    if unet.conv_in.out_channels != width:
        raise ConfigError(f"unet.conv_in has {unet.conv_in.out_channels} output channels but block_out_channels[0] "
                          f"is {width}; this UNet is not a UNet2DConditionModel the control can attach to")
    return width


class ControlledUNet(nn.Module):
    """A UNet with a control encoder whose output is added to ``unet.conv_in``'s output (forward hook)."""

    def __init__(self, unet: nn.Module, encoder: ControlEncoder):
        super().__init__()
        if encoder.config.out_channels != unet_width(unet):
            raise ConfigError(f"the control encoder outputs {encoder.config.out_channels} channels but the UNet's "
                              f"first block has {unet_width(unet)}; build it with ControlEncoder.for_unet(unet)")
        self.unet = unet
        self.control_encoder = encoder
        self._residual: torch.Tensor | None = None
        unet.conv_in.register_forward_hook(self._add_residual)

    def _add_residual(self, module, args, out: torch.Tensor) -> torch.Tensor:
        residual = self._residual
        if residual is None:
            return out  # no condition: the plain UNet
        if residual.shape[-2:] != out.shape[-2:]:
            raise ValueError(f"the condition gives a {tuple(residual.shape[-2:])} control but the latents are "
                             f"{tuple(out.shape[-2:])}; pass maps at the image resolution "
                             f"({self.control_encoder.config.downscale}x the latent size)")
        if out.shape[0] % residual.shape[0]:
            raise ValueError(f"{residual.shape[0]} condition map(s) for a batch of {out.shape[0]} latents; pass one "
                             "map per prompt")
        # classifier-free guidance stacks [uncond; cond]: both halves get the map (as OFT's sampler does)
        repeat = out.shape[0] // residual.shape[0]
        return out + residual.to(out.device, out.dtype).repeat(repeat, 1, 1, 1)

    @contextlib.contextmanager
    def condition(self, control: torch.Tensor):
        """Within the block, every call of the UNet adds ``encoder(control)`` (computed once) to its first features."""
        if self._residual is not None:
            raise RuntimeError("a condition is already set on this ControlledUNet; do not nest condition()")
        weight = self.control_encoder.conv_in.weight
        self._residual = self.control_encoder(control.to(weight.device, weight.dtype))
        try:
            yield self
        finally:
            self._residual = None

    def forward(self, sample, timestep, encoder_hidden_states, control: torch.Tensor | None = None, **kwargs):
        """``unet(sample, timestep, encoder_hidden_states, **kwargs)`` with ``control`` (B, 3, H, W) in [0, 1]."""
        scope = self.condition(control) if control is not None else contextlib.nullcontext()
        with scope:
            return self.unet(sample, timestep, encoder_hidden_states, **kwargs)


# ------------------------------------------------------------------ save / load
def save_control_encoder(encoder: ControlEncoder, folder: str | os.PathLike, **meta) -> Path:
    """``control_encoder.safetensors`` + ``control_encoder_config.json`` (architecture + ``meta``) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(folder / ENCODER_WEIGHTS), metadata={"format": ENCODER_FORMAT})
    config = {**asdict(encoder.config), "block_out_channels": list(encoder.config.block_out_channels)}
    (folder / ENCODER_CONFIG).write_text(json.dumps({"format": ENCODER_FORMAT, "config": config, **meta}, indent=2))
    return folder


def read_control_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / ENCODER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {ENCODER_CONFIG}; pass a folder written by train_s2i.py "
                                "(its output_dir/model)")
    meta = json.loads(path.read_text())
    if meta.get("format") != ENCODER_FORMAT:
        raise ConfigError(f"{path} is not an ether-diffusion control encoder config (format={meta.get('format')!r})")
    return meta


def load_control_encoder(folder: str | os.PathLike) -> ControlEncoder:
    """The encoder saved by `save_control_encoder`, in fp32; names and shapes are checked exactly."""
    encoder = ControlEncoder(ControlEncoderConfig(**read_control_meta(folder)["config"]))
    path = Path(folder) / ENCODER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {ENCODER_WEIGHTS}")
    saved, mine = load_file(str(path)), encoder.state_dict()
    if set(saved) != set(mine) or any(saved[k].shape != mine[k].shape for k in mine):
        raise ConfigError(f"{path} does not match its {ENCODER_CONFIG}; the folder is damaged")
    encoder.load_state_dict(saved)
    return encoder
