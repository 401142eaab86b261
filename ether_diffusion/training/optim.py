"""Optimiser and learning-rate schedule of a `TrainConfig` (AdamW or bitsandbytes' 8-bit AdamW; diffusers' schedulers)."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler

from ..typed_config import ConfigError


def effective_learning_rate(cfg, num_processes: int) -> float:
    """``learning_rate``, times processes x batch x accumulation when ``scale_lr`` (diffusers' convention)."""
    if not cfg.scale_lr:
        return cfg.learning_rate
    return cfg.learning_rate * num_processes * cfg.train_batch_size * cfg.gradient_accumulation_steps


def build_optimizer(params: list[torch.nn.Parameter], cfg, num_processes: int = 1) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("no trainable parameters: the adapter was not added to the model")
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
        adamw = bnb.optim.AdamW8bit
    else:
        adamw = torch.optim.AdamW
    return adamw(params, lr=effective_learning_rate(cfg, num_processes), betas=(cfg.adam_beta1, cfg.adam_beta2),
                 weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg, max_train_steps: int, num_processes: int = 1):
    """diffusers' ``get_scheduler``. A prepared scheduler steps once per process per optimiser step, hence the scaling."""
    return get_scheduler(
        cfg.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
        num_cycles=cfg.lr_num_cycles, power=cfg.lr_power,
    )
