"""The optimisation loop every training script shares: accumulation, clipping, progress bar, logging, checkpoints,
validation and exact resume.

The script supplies two functions: ``make_inputs(batch) -> inputs`` (eager, no gradients: the batch on the device,
cached latents or VAE encodings, and the step's noise and timesteps drawn from the run's generator) and
``loss_fn(inputs) -> (loss, logs)`` (pure tensor work with no host sync: logs are tensors). The step built from
``loss_fn`` (loss, backward, clipping, AdamW) runs eagerly or replays from a CUDA graph (`cuda_graph.GraphedStep`);
losses reach the host only every ``logging_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, remove_partial_checkpoints, resolve_checkpoint, save_checkpoint
from .cuda_graph import GraphedStep, Inputs
from .optim import lr_on_device


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


class LossMeter:
    """Sums of the step outputs on the device; read (one host sync) only when the loop logs."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, outputs: dict[str, torch.Tensor]) -> None:
        for k, v in outputs.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def mean(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Means since the last call (empty if nothing was added). ``reduce``: the mean over processes (data
        parallel: every process logs the loss of the global batch, which is what one process with it would log)."""
        names = sorted(self.sums)
        if not names:
            return {}
        means = torch.stack([self.sums[k] for k in names]) / self.count  # (K,)
        if reduce is not None:
            means = reduce(means)
        self.sums, self.count = {}, 0
        return dict(zip(names, means.tolist()))


def train_loop(accelerator, cfg, model, optimizer, lr_scheduler, dataloader, params: list[torch.nn.Parameter],
               make_inputs: Callable[[dict], Inputs], loss_fn: Callable[[Inputs], tuple[torch.Tensor, dict]],
               plan: StepPlan, generator: torch.Generator, on_validation: Callable[[int], None] | None = None,
               cuda_graph: bool = False, on_step: Callable[[int], None] | None = None) -> tuple[int, dict[str, float]]:
    """Run (or resume) to ``plan.max_train_steps``; returns (final step, the last step's logs as floats). Objects must
    already be prepared.

    ``generator`` is the run's source of training noise; it is checkpointed per process. ``on_validation(step)``
    is called every ``cfg.validation_steps`` optimiser steps (on every process; it decides who works).
    ``cuda_graph``: replay the step from CUDA graphs (needs a capturable optimiser and no accumulation; see
    `setup.use_cuda_graph`). ``on_step(step)`` is called after every optimiser step (benchmarks time the loop with it).
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

    if cuda_graph:
        lr_on_device(optimizer)  # a loaded checkpoint puts back the saved learning-rate values

    def one_step(inputs: Inputs) -> dict[str, torch.Tensor]:
        loss, logs = loss_fn(inputs)
        accelerator.backward(loss)
        if accelerator.sync_gradients and cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}}

    run_step = GraphedStep(one_step, accelerator.device) if cuda_graph else one_step
    first_epoch = global_step // plan.steps_per_epoch
    skip_batches = (global_step % plan.steps_per_epoch) * cfg.gradient_accumulation_steps
    bar = tqdm(total=plan.max_train_steps, initial=global_step, desc="train", unit="step",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    meter, outputs = LossMeter(), {}
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
                outputs = run_step(make_inputs(batch))
                lr_scheduler.step()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            meter.add(outputs)
            bar.update(1)
            if on_step is not None:
                on_step(global_step)
            if global_step % cfg.logging_steps == 0 or global_step >= plan.max_train_steps:
                across = (lambda t: accelerator.reduce(t, "mean")) if accelerator.num_processes > 1 else None
                logs = {**meter.mean(across), "lr": float(lr_scheduler.get_last_lr()[0])}
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
    return global_step, {k: float(v.item()) for k, v in outputs.items()}
