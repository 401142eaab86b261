"""Images from semantic maps with a `StableDiffusionPipeline` whose UNet carries a `ControlledUNet` hook, and the
validation grid of S2I training (one row per map: map | generated)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from PIL import Image

from ..data.ade20k import ADE20KSample, load_condition
from ..models.control import ControlledUNet
from ..training.validation import image_grid, log_images


def to_pil(condition: torch.Tensor) -> Image.Image:
    """(3, H, W) condition in [0, 1] -> RGB image."""
    return Image.fromarray(condition.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy())


@torch.no_grad()
def sample_from_maps(pipe, controlled: ControlledUNet, conditions: torch.Tensor, prompts: list[str], seeds: list[int],
                     num_inference_steps: int, guidance_scale: float) -> list[Image.Image]:
    """One image per (map, prompt, seed); ``conditions`` (B, 3, R, R) in [0, 1]. Latents come from CPU generators, so
    an image depends on its seed only (not on the batch, the device count or the GPU)."""
    if not len(conditions) == len(prompts) == len(seeds):
        raise ValueError(f"{len(conditions)} maps, {len(prompts)} prompts and {len(seeds)} seeds; give one of each "
                         "per image")
    size = conditions.shape[-1]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with controlled.condition(conditions):
        return pipe(prompts, generator=generators, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, height=size, width=size).images


def run_s2i_validation(accelerator, pipe, controlled: ControlledUNet, samples: list[ADE20KSample], cfg, step: int,
                       models: AbstractContextManager = nullcontext()) -> Image.Image | None:
    """Main process: render ``samples`` (map | generated rows), save ``validation/step<step>.png``, log it;
    ``models`` is entered around the sampling (`training.setup.Parked`)."""
    if not samples or not accelerator.is_main_process:
        return None
    conditions = torch.stack([load_condition(s.annotation, cfg.resolution) for s in samples])  # (N, 3, R, R)
    seed = cfg.seed if cfg.seed is not None else 0
    unet = controlled.unet
    was_training = unet.training
    unet.eval()
    pipe.set_progress_bar_config(disable=True)
    with models, accelerator.autocast():
        images = sample_from_maps(pipe, controlled, conditions, [s.prompt for s in samples],
                                  [seed + i for i in range(len(samples))], cfg.validation_inference_steps,
                                  cfg.validation_guidance_scale)
    unet.train(was_training)
    tiles = [im for c, g in zip(conditions, images) for im in (to_pil(c), g)]
    grid = image_grid(tiles, cols=2)
    folder = Path(cfg.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    grid.save(folder / f"step{step:06d}.png")
    log_images(accelerator, [grid], step, tag="validation (map | generated)",
               caption=" / ".join(s.prompt for s in samples))
    return grid
