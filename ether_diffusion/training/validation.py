"""Validation images during training: generated with fixed seeds, saved as PNG and logged to every tracker."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def image_grid(images: list[Image.Image], cols: int | None = None) -> Image.Image:
    """Paste equally sized images into a grid, ``cols`` wide (default: all in one row)."""
    cols = cols or len(images)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB").resize((w, h)), ((i % cols) * w, (i // cols) * h))
    return grid


def log_images(accelerator, images: list[Image.Image], step: int, tag: str = "validation",
               caption: str | None = None) -> None:
    """Send images to TensorBoard (``add_images``) and wandb (``wandb.Image``), whichever are active."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            arr = np.stack([np.asarray(im.convert("RGB")) for im in images])  # (N, H, W, 3) uint8
            tracker.writer.add_images(tag, arr, step, dataformats="NHWC")
            tracker.writer.flush()
        elif tracker.name == "wandb":
            import wandb

            tracker.log({tag: [wandb.Image(im, caption=caption) for im in images]}, step=step)


@torch.no_grad()
def generate_validation(pipeline, prompt: str, num_images: int, seed: int, num_inference_steps: int,
                        guidance_scale: float, height: int, width: int) -> list[Image.Image]:
    """``num_images`` images of ``prompt``; image i uses seed ``seed + i`` whatever the batching."""
    device = pipeline.unet.device
    generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(num_images)]
    pipeline.set_progress_bar_config(disable=True)
    return pipeline([prompt] * num_images, generator=generators, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, height=height, width=width).images


def run_validation(accelerator, pipeline, cfg, step: int, height: int, width: int,
                   models: AbstractContextManager = nullcontext()) -> list[Image.Image]:
    """Generate ``cfg.num_validation_images`` of ``cfg.validation_prompt`` (main process only), save and log them;
    ``models`` is entered around the sampling (`setup.Parked`: the models the training steps left on the CPU)."""
    if cfg.validation_prompt is None or not accelerator.is_main_process:
        return []
    print(f"validation at step {step}: {cfg.num_validation_images} image(s) of {cfg.validation_prompt!r}", flush=True)
    unet = pipeline.unet
    was_training = unet.training
    unet.eval()
    with models, accelerator.autocast():
        images = generate_validation(pipeline, cfg.validation_prompt, cfg.num_validation_images,
                                     cfg.seed if cfg.seed is not None else 0, cfg.validation_inference_steps,
                                     cfg.validation_guidance_scale, height, width)
    unet.train(was_training)
    folder = Path(cfg.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"step{step:06d}_{i}.png")
    log_images(accelerator, images, step, caption=cfg.validation_prompt)
    return images
