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


def build_optimizer(params: list, cfg, num_processes: int = 1, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW over ``params`` (parameters or param groups). ``capturable``: fused, with tensor learning rates, so a
    CUDA graph can replay the step (`lr_on_device` after loading a checkpoint)."""
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
        # several per step)
        extra = {"fused": True} if fused_ok(params) else {}
        if capturable and extra:
            extra["capturable"] = True
    optimizer = adamw(params, lr=effective_learning_rate(cfg, num_processes), betas=(cfg.adam_beta1, cfg.adam_beta2),
                      weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon, **extra)
    if extra.get("capturable"):
        lr_on_device(optimizer)
    return optimizer


def lr_on_device(optimizer: torch.optim.Optimizer) -> None:
    """Each group's ``lr`` as a float32 tensor on its parameters' device, which a captured AdamW step reads (the LR
    scheduler fills it in place); ``initial_lr`` stays a float so the scheduler computes on the host, without a sync.
    Also after ``load_state_dict``, which puts back the saved value."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group.setdefault("initial_lr", lr)
        if torch.is_tensor(group["initial_lr"]):
            group["initial_lr"] = float(group["initial_lr"])
        device = group["params"][0].device
        if not (torch.is_tensor(group["lr"]) and group["lr"].device == device):
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device)


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
