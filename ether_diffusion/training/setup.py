"""Set-up and wrap-up that every training script shares: the frozen base models, the noise scheduler, trackers,
and the final save + validation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .checkpoint import register_trainable_state_hooks
from ..typed_config import ConfigError, save_config
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
        # tensor by tensor, so the device never holds the fp32 model (for the UNet: 3.2 GiB, the peak of a bs 1 run)
        module.to(device=device, dtype=dtype if dtype != torch.float32 else None)
    pipe.vae.eval()
    pipe.text_encoder.eval()


class Parked:
    """Frozen models no training step reads wait on the CPU while the step runs on ``device``: the VAE once the latents
    are cached, the text encoder once the prompts are encoded. ``with parked:`` brings them to ``device`` for a block
    that needs them (validation images) and sends them back after it. Nothing moves off a CPU run."""

    def __init__(self, modules: list[torch.nn.Module], device: torch.device):
        self.device = torch.device(device)
        self.modules = modules if self.device.type != "cpu" else []
        self._to("cpu")

    def _to(self, device) -> None:
        for module in self.modules:
            module.to(device)

    def __enter__(self) -> Parked:
        self._to(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self._to("cpu")


def start_trackers(accelerator, cfg) -> None:
    """TensorBoard / wandb runs with the config as hyperparameters (main process only)."""
    if accelerator.is_main_process:
        hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in vars(cfg).items()}
        accelerator.init_trackers(cfg.tracker_project_name, config=hparams)


def use_cuda_graph(accelerator, cfg) -> bool:
    """Whether the step replays from a CUDA graph: ``cfg.cuda_graph`` 'on' / 'off', or 'auto' (on where it is safe).

    A graph needs one CUDA process (DDP's gradient hooks are not captured), one batch per optimiser step, no fp16
    loss scaling (its overflow check reads the GPU), torch's fused AdamW and no activation checkpointing.
    """
    if cfg.cuda_graph == "off":
        return False
    blockers = [why for why, bad in (
        ("a CUDA device", accelerator.device.type != "cuda"),
        ("one process", accelerator.num_processes > 1),
        ("gradient_accumulation_steps 1", cfg.gradient_accumulation_steps > 1),
        ("mixed_precision other than fp16 (bf16 or no)", accelerator.mixed_precision == "fp16"),
        ("torch's AdamW (not use_8bit_adam)", cfg.use_8bit_adam),
        ("gradient_checkpointing off", cfg.gradient_checkpointing),
    ) if bad]
    if blockers and cfg.cuda_graph == "on":
        raise ConfigError("cuda_graph on needs " + ", ".join(blockers) + "; pass --cuda_graph auto or off")
    return not blockers


def loader_workers(accelerator, cfg, cached: bool) -> int:
    """``cfg.dataloader_num_workers``, or by default: none when the latents are cached or on CPU (the main thread has
    little to load, and on CPU the cores train), else min(4, cores - 1)."""
    if cfg.dataloader_num_workers is not None:
        return cfg.dataloader_num_workers
    if cached or accelerator.device.type != "cuda":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def prepare_training(accelerator, cfg, model, optimizer, dataset, collate, seed: int, workers: int = 0):
    """Data loader, accelerate's wrapping, the step plan, the LR scheduler, trackers and the per-process noise
    generator (the same in every process): (model, optimizer, loader, lr_scheduler, plan, generator). ``workers`` loader processes stay alive
    across epochs and fill pinned memory on CUDA."""
    pin = accelerator.device.type == "cuda" and workers > 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train_batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)
    register_trainable_state_hooks(accelerator)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan: StepPlan = plan_steps(cfg, len(loader))
    lr_scheduler = accelerator.prepare(build_lr_scheduler(optimizer, cfg, plan.max_train_steps,
                                                          accelerator.num_processes))
    start_trackers(accelerator, cfg)
    # the same stream in every process: each draws for the global batch and keeps its rows (`loss.Shard`)
    generator = torch.Generator(device=accelerator.device).manual_seed(seed)
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
