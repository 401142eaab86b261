"""One interface over our adapters (ether, ether_plus, oft, naive) and PEFT's LoRA: add, save, load, merge.

Saved folders: ours in the `save_ether` format; LoRA in PEFT's (``adapter_config.json`` with ``peft_type: LORA`` +
``adapter_model.safetensors``, keys as `get_peft_model_state_dict` writes them). `adapter_kind` tells them apart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..config import PROJECTIONS, EtherConfig
from ..io import CONFIG_NAME, WEIGHTS_NAME, load_ether, save_ether
from ..model import apply_ether, ether_parameters, merge_ether
from ..typed_config import ConfigError
from .options import LORA


def _lora_config(rank: int, alpha: float | None, target_modules):
    from peft import LoraConfig

    # init "gaussian" as diffusers' train_dreambooth_lora.py (0.3x): A ~ N(0, 1/r), B = 0, so the model starts as base
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                      target_modules=list(target_modules))


def add_ether(unet: nn.Module, config: EtherConfig, attention: str = "sdpa") -> list[nn.Parameter]:
    """Freeze ``unet``, apply the ETHER-family adapter ``config`` describes, return its trainable parameters (fp32)."""
    try:
        apply_ether(unet, config, attention=attention)
    except ValueError as e:  # n_blocks or target_modules that do not fit this model: the user's options
        raise ConfigError(str(e)) from e
    return ether_parameters(unet)


def add_lora(unet: nn.Module, rank: int = 4, alpha: float | None = None, target_modules=PROJECTIONS,
             init_seed: int | None = None, attention: str = "sdpa") -> list[nn.Parameter]:
    """Freeze ``unet``, add a PEFT LoRA, return its trainable parameters (cast to fp32)."""
    unet.requires_grad_(False)
    if attention == "xformers":
        unet.enable_xformers_memory_efficient_attention()
    if init_seed is not None:
        torch.manual_seed(init_seed)
    unet.add_adapter(_lora_config(rank, alpha, target_modules))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def add_adapter(unet: nn.Module, method: str, n_blocks: int = 4, target_modules=PROJECTIONS,
                init_seed: int | None = None, lora_rank: int = 4, lora_alpha: float | None = None,
                attention: str = "sdpa") -> list[nn.Parameter]:
    """Freeze ``unet``, add the adapter, return its trainable parameters (always fp32)."""
    if method == LORA:
        return add_lora(unet, lora_rank, lora_alpha, target_modules, init_seed, attention)
    config = EtherConfig(method=method, n_blocks=n_blocks, target_modules=tuple(target_modules), init_seed=init_seed)
    return add_ether(unet, config, attention)


def add_adapter_from_config(unet: nn.Module, cfg) -> list[nn.Parameter]:
    """`add_adapter` with a `TrainConfig`'s adapter group: its `EtherConfig` (already checked when the config was
    built), or its LoRA fields."""
    if cfg.method == LORA:
        return add_lora(unet, cfg.lora_rank, cfg.lora_alpha, cfg.target_modules, cfg.adapter_seed, cfg.attention)
    return add_ether(unet, cfg.ether_config(cfg.seed), cfg.attention)


def save_adapter(unet: nn.Module, method: str, folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if method != LORA:
        return save_ether(unet, folder)
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    unet.peft_config["default"].save_pretrained(str(folder))  # adapter_config.json
    return folder


def adapter_kind(folder: str | os.PathLike) -> str:
    """'lora' for a PEFT LoRA folder, else the ETHER-family method named in its config."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {CONFIG_NAME}; pass an adapter folder written by "
                                "train_dreambooth.py (its output_dir/adapter)")
    meta = json.loads(path.read_text())
    if meta.get("peft_type") == "LORA":
        return LORA
    if "config" in meta and "method" in meta["config"]:
        return meta["config"]["method"]
    raise ConfigError(f"{path} is neither an ether-diffusion nor a PEFT LoRA adapter config; pass a folder written "
                      "by train_dreambooth.py (its output_dir/adapter)")


def load_adapter(unet: nn.Module, folder: str | os.PathLike) -> str:
    """Load a saved adapter (either format) into ``unet``; returns its method."""
    kind = adapter_kind(folder)
    if kind != LORA:
        load_ether(unet, folder)
        return kind
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    config = LoraConfig.from_pretrained(str(folder))
    unet.add_adapter(config)
    try:
        result = set_peft_model_state_dict(unet, load_file(str(Path(folder) / WEIGHTS_NAME)))
    except RuntimeError as e:  # torch's load_state_dict: "size mismatch for <key>: ..." lines
        mismatch = next((line.strip().rstrip(".") for line in str(e).splitlines() if "size mismatch" in line), None)
        if mismatch is None:
            raise
        raise ConfigError(f"LoRA adapter {folder} does not fit this UNet ({mismatch}); pass the base model it was "
                          "trained on") from None
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if getattr(result, "unexpected_keys", None) or missing:
        raise ConfigError(f"LoRA adapter {folder} does not fit this UNet (e.g. "
                          f"{(result.unexpected_keys or missing)[0]}); pass the base model it was trained on")
    return kind


def merge_adapter(unet: nn.Module, method: str) -> nn.Module:
    """Fold the adapter into the weights: the model then runs at the base model's speed."""
    if method == LORA:
        unet.fuse_lora()
    else:
        merge_ether(unet)
    return unet
