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
        extra = {}
    else:
        adamw = torch.optim.AdamW
        # one fused kernel per step where every parameter is a CUDA float tensor (the foreach default launches
        # several per step; an eager SD 1.5 step is host-bound, benchmarks/README.md)
        extra = {"fused": True} if fused_ok(params) else {}
    return adamw(params, lr=effective_learning_rate(cfg, num_processes), betas=(cfg.adam_beta1, cfg.adam_beta2),
                 weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon, **extra)


def fused_ok(params: list) -> bool:
    """Whether torch's fused AdamW takes these parameters (or param groups): all CUDA floating-point tensors."""
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(flat) and all(p.is_cuda and p.is_floating_point() for p in flat)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg, max_train_steps: int, num_processes: int = 1):
    """diffusers' ``get_scheduler``. A prepared scheduler steps once per process per optimiser step, hence the scaling."""
    return get_scheduler(
        cfg.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
        num_cycles=cfg.lr_num_cycles, power=cfg.lr_power,
    )
