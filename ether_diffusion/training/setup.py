"""Set-up and wrap-up that every training script shares: the frozen base models, the noise scheduler, trackers,
and the final save + validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .config import save_config


def training_noise_scheduler(pipe, prediction_type: str | None) -> DDPMScheduler:
    """DDPM with the base model's schedule; ``prediction_type`` overrides its target when given."""
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if prediction_type is not None:
        scheduler.register_to_config(prediction_type=prediction_type)
    return scheduler


def freeze_base(pipe, device: torch.device, dtype: torch.dtype) -> None:
    """UNet, VAE and text encoder: no gradients, on ``device``, in ``dtype`` (fp16/bf16 under mixed precision)."""
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.to(device)
        if dtype != torch.float32:
            module.to(dtype)
    pipe.vae.eval()
    pipe.text_encoder.eval()


def start_trackers(accelerator, cfg) -> None:
    """TensorBoard / wandb runs with the config as hyperparameters (main process only)."""
    if accelerator.is_main_process:
        hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in vars(cfg).items()}
        accelerator.init_trackers(cfg.tracker_project_name, config=hparams)


def finish_training(accelerator, cfg, step: int, folder: Path, config_file: str, save: Callable[[Path], object],
                    validate: Callable[[int], None]) -> None:
    """Save the trained weights (``save(folder)``) and the resolved config, validate the last step if it was not
    validated yet, and close the trackers."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save(folder)
        save_config(cfg, folder / config_file)
        if step % cfg.validation_steps:  # the last step was not validated yet
            validate(step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
