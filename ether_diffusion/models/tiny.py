"""The ``tiny`` model: an SD-architecture pipeline with random weights, small enough for 2 CPU cores.

UNet, VAE and CLIP text encoder are built from configs in code (the shapes diffusers' own tests use); the tokenizer
is the real CLIP tokenizer. Its images are noise: it exists so the whole train -> generate -> evaluate loop runs
anywhere, with no download.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import clip_tokenizer
from .unet_configs import TINY_UNET, build_unet
from ..names import TINY_ID, TINY_RESOLUTION  # (latents are 8x smaller)

__all__ = ["SD_SCHEDULER", "TINY_ID", "TINY_RESOLUTION", "TINY_TEXT", "TINY_VAE", "tiny_components", "tiny_pipeline"]


TINY_VAE = dict(
    block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=TINY_RESOLUTION,
)
# same special-token ids and vocabulary as OpenAI CLIP, 32-d hidden states to match TINY_UNET.cross_attention_dim
TINY_TEXT = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
    max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, layer_norm_eps=1e-5,
)
# SD 1.5's scheduler/scheduler_config.json
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_components(seed: int = 0) -> dict:
    """The parts of the tiny pipeline, deterministic for a seed."""
    unet = build_unet(TINY_UNET, seed=seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
                scheduler=DDIMScheduler(**SD_SCHEDULER))


def tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(**tiny_components(seed), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)

