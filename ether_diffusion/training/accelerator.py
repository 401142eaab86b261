"""The `Accelerator` of a training run: precision, accumulation, trackers, seeded data order, TF32, log levels.

Multi-GPU is accelerate's alone: launch with ``accelerate launch [--config_file configs/accelerate/...]`` and nothing
here changes.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from ..typed_config import ConfigError


def tracker_names(report_to: str) -> list[str]:
    """'tensorboard' | 'wandb' | 'all' | 'none' -> the installed trackers to log with (one error if missing)."""
    installed = {name: importlib.util.find_spec(module) is not None
                 for name, module in (("tensorboard", "tensorboard"), ("wandb", "wandb"))}
    if report_to == "none":
        return []
    if report_to == "all":
        return [name for name, ok in installed.items() if ok]
    if not installed[report_to]:
        raise ConfigError(f"report_to={report_to!r} but {report_to} is not installed; pip install {report_to} "
                          "or pass --report_to none")
    return [report_to]


def build_accelerator(cfg) -> Accelerator:
    """An `Accelerator` for any `TrainConfig`: set up before any model is built so seeds apply to everything."""
    output_dir = Path(cfg.output_dir)
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / cfg.logging_dir))
    # seedable sampler: epoch e's order depends only on (seed, e), so a resumed run sees the same batches
    data = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed if cfg.seed is not None else 0)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        log_with=tracker_names(cfg.report_to) or None,
        project_config=project,
        dataloader_config=data,
    )
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.seed is not None:
        set_seed(cfg.seed)
    quiet_other_processes(accelerator)
    return accelerator


def quiet_other_processes(accelerator: Accelerator) -> None:
    """Only the main process prints library info; the others print errors only."""
    import diffusers
    import transformers

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """dtype of the frozen weights: fp16 / bf16 under mixed precision, else fp32 (adapter parameters stay fp32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
