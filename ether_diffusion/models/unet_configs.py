"""UNet configs as diffusers writes them in ``unet/config.json`` (architecture only: no weights needed)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

# runwayml/stable-diffusion-v1-5 unet/config.json (architecture keys)
SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, sample_size=64, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)

# stabilityai/stable-diffusion-2-1 unet/config.json (architecture keys): per-level heads, linear projections, 1024-d text
SD21_UNET = dict(SD15_UNET, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True,
                 sample_size=96)

# a UNet of the SD architecture small enough for 2 CPU cores (the shape of diffusers' own test UNets)
TINY_UNET = dict(
    block_out_channels=[32, 64], layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)


def build_unet(config: dict, device: str | torch.device = "cpu", seed: int | None = 0) -> UNet2DConditionModel:
    """A randomly initialised UNet from a config dict; ``device="meta"`` allocates nothing (for counting)."""
    if seed is not None and str(device) != "meta":
        torch.manual_seed(seed)
    with torch.device(device):
        return UNet2DConditionModel(**config)
