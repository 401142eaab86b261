"""Set-up and wrap-up that every training script shares: the frozen base models, the noise scheduler, trackers,
and the final save + validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .checkpoint import register_trainable_state_hooks
from ..typed_config import save_config
from .loop import StepPlan, plan_steps
from .optim import build_lr_scheduler


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


def prepare_training(accelerator, cfg, model, optimizer, dataset, collate, seed: int):
    """Data loader, accelerate's wrapping, the step plan, the LR scheduler, trackers and the per-process noise
    generator: (model, optimizer, loader, lr_scheduler, plan, generator)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train_batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=cfg.dataloader_num_workers)
    register_trainable_state_hooks(accelerator)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan: StepPlan = plan_steps(cfg, len(loader))
    lr_scheduler = accelerator.prepare(build_lr_scheduler(optimizer, cfg, plan.max_train_steps,
                                                          accelerator.num_processes))
    start_trackers(accelerator, cfg)
    generator = torch.Generator(device=accelerator.device).manual_seed(seed + accelerator.process_index)
    return model, optimizer, loader, lr_scheduler, plan, generator


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
    accelerator.print(f"{folder.name} saved to {folder} (step {step})", flush=True)
