"""Per-layer distances and hyperspherical energy of a trained adapter folder, for every method including LoRA."""

from __future__ import annotations

import copy
import os

import torch

from ..analysis import hyperspherical_energy, layer_stats, summarize
from ..models.loading import load_pipeline
from ..training.adapters import LORA, load_adapter


@torch.no_grad()
def lora_layer_stats(unet, folder: str | os.PathLike) -> dict[str, dict[str, float]]:
    """||W' - W||_F and HE of W' = W + ΔW for every LoRA-adapted linear (no transform: dist_in/out are 0)."""
    load_adapter(unet, folder)
    base = {n: m.base_layer.weight.detach().double().clone() for n, m in unet.named_modules()
            if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
    unet.fuse_lora()
    out = {}
    for name, W in base.items():
        W_new = unet.get_submodule(name).base_layer.weight.double()
        out[name] = {"dist_in": 0.0, "dist_out": 0.0, "weight_dist": float((W_new - W).norm()),
                     "he": float(hyperspherical_energy(W_new)), "he_base": float(hyperspherical_energy(W))}
    return out


def load_base_unet(model_id: str):
    """The base UNet in float32, loaded once per study (each measurement works on a copy)."""
    return load_pipeline(model_id).unet.float()


def adapter_summary(base_unet, folder: str | os.PathLike, method: str) -> dict[str, float]:
    """Summed distances and HE of the adapter in ``folder`` on a copy of the base UNet."""
    unet = copy.deepcopy(base_unet)
    if method == LORA:
        summary = summarize(lora_layer_stats(unet, folder))
        summary["transform_dist"] = None  # LoRA has no multiplicative transform
        return summary
    load_adapter(unet, folder)
    return summarize(layer_stats(unet))
