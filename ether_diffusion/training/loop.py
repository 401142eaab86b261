"""The optimisation loop every training script shares: accumulation, clipping, progress bar, logging, checkpoints,
validation and exact resume. The script supplies ``compute_loss(batch) -> (loss, logs)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, remove_partial_checkpoints, resolve_checkpoint, save_checkpoint


@dataclass(frozen=True)
class StepPlan:
    max_train_steps: int  # optimiser steps of the whole run
    num_epochs: int
    steps_per_epoch: int  # optimiser steps per epoch


def plan_steps(cfg, batches_per_epoch: int) -> StepPlan:
    """``max_train_steps`` wins over ``num_train_epochs`` (diffusers' convention); batches are per process."""
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps))
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    return StepPlan(max_steps, math.ceil(max_steps / steps_per_epoch), steps_per_epoch)


def train_loop(accelerator, cfg, model, optimizer, lr_scheduler, dataloader, params: list[torch.nn.Parameter],
               compute_loss: Callable[[dict], tuple[torch.Tensor, dict]], plan: StepPlan,
               generator: torch.Generator, on_validation: Callable[[int], None] | None = None) -> int:
    """Run (or resume) to ``plan.max_train_steps``; returns the final step. Objects must already be prepared.

    ``generator`` is the run's source of training noise; it is checkpointed per process. ``on_validation(step)``
    is called every ``cfg.validation_steps`` optimiser steps (on every process; it decides who works).
    """
    global_step = 0
    if accelerator.is_main_process:
        for stale in remove_partial_checkpoints(cfg.output_dir):
            print(f"removed {stale}, a checkpoint whose save was interrupted", flush=True)
    accelerator.wait_for_everyone()
    path = resolve_checkpoint(cfg.output_dir, cfg.resume_from_checkpoint)
    if path is not None:
        global_step = load_checkpoint(accelerator, path, generators={"noise": generator})["step"]
        accelerator.print(f"resuming from {path} at step {global_step}")
    elif cfg.resume_from_checkpoint == "latest":
        accelerator.print(f"no complete checkpoint in {cfg.output_dir}; starting a fresh run")

    first_epoch = global_step // plan.steps_per_epoch
    skip_batches = (global_step % plan.steps_per_epoch) * cfg.gradient_accumulation_steps
    bar = tqdm(total=plan.max_train_steps, initial=global_step, desc="train", unit="step",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    model.train()
    for epoch in range(first_epoch, plan.num_epochs):
        if global_step >= plan.max_train_steps:
            break
        dataloader.set_epoch(epoch)  # the sampler's order
        if hasattr(dataloader.dataset, "set_epoch"):  # augmentation seeded by (seed, epoch, index)
            dataloader.dataset.set_epoch(epoch)
        loader = dataloader
        if epoch == first_epoch and skip_batches:
            loader = accelerator.skip_first_batches(dataloader, skip_batches)
            loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss, logs = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], **logs}
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if global_step % cfg.checkpointing_steps == 0:
                saved = save_checkpoint(accelerator, cfg.output_dir, global_step, cfg.checkpoints_total_limit,
                                        generators={"noise": generator}, state={"epoch": epoch})
                if accelerator.is_local_main_process:
                    bar.write(f"saved checkpoint {saved}")
            if on_validation is not None and global_step % cfg.validation_steps == 0:
                on_validation(global_step)
            if global_step >= plan.max_train_steps:
                break
    bar.close()
    return global_step
