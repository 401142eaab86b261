"""Measurements of an adapted model for the paper's robustness study (Sec. 4, Figs. 4-7).

- ``||H - I||_F``: how far each transform is from the identity (2 per block for ETHER, at any learning rate);
- ``||W' - W||_F``: how far the adapted weight is from the pretrained one;
- hyperspherical energy (Qiu et al., "Controlling Text-to-Image Diffusion by Orthogonal Finetuning", NeurIPS 2023,
  Eq. 1, after Liu et al. 2018): for a layer whose neurons are the rows ``w_i`` of ``W`` (f x d),
  ``HE(W) = sum_{i != j} ||ŵ_i - ŵ_j||^{-1}`` with ``ŵ = w / ||w||``. An orthogonal transform on the input side
  (``W Q``) rotates every neuron alike and keeps HE; ``naive`` and ETHER+'s output side change it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import functional as Fn
from .projection import get_projection
from .state import get_state


def hyperspherical_energy(weight: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """HE of the rows of ``weight`` (f, d), in float64: sum over ordered pairs i != j of ||ŵ_i - ŵ_j||^-power."""
    w = weight.detach().double()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (f, d) unit neurons
    dist = torch.cdist(w, w)  # (f, f)
    off = ~torch.eye(w.shape[0], dtype=torch.bool, device=w.device)
    return dist[off].clamp_min(1e-12).pow(-power).sum()


@torch.no_grad()
def layer_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per adapted layer: ``dist_in`` / ``dist_out`` = ||H - I||_F per side, ``weight_dist`` = ||H̃ W H - W||_F,
    ``he`` and ``he_base`` = hyperspherical energy of the adapted and of the pretrained weight.

    Reads the active adapter; the model must not be merged (the base weights are needed).
    """
    state = get_state(model)
    if state.merged:
        raise RuntimeError("layer_stats needs the unmerged model: call unmerge_ether(model) first")
    method = state.config.method
    out: dict[str, dict[str, float]] = {}
    for attn_name, proc in state.processors.items():
        attn = model.get_submodule(attn_name)
        for p in proc.shapes:
            p_in, p_out = proc.adapter(p).params()
            W = get_projection(attn, p).weight.double()
            W_new = Fn.fold_weight(W, method, p_in, p_out)
            out[f"{attn_name}.{p}"] = {
                "dist_in": float(Fn.distance_to_identity(method, {k: v.double() for k, v in p_in.items()})),
                "dist_out": (float(Fn.distance_to_identity(method, {k: v.double() for k, v in p_out.items()}))
                             if p_out is not None else 0.0),
                "weight_dist": float((W_new - W).norm()),
                "he": float(hyperspherical_energy(W_new)),
                "he_base": float(hyperspherical_energy(W)),
            }
    return out


def summarize(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """Sums over layers (the paper reports totals), plus the number of layers."""
    keys = ("dist_in", "dist_out", "weight_dist", "he", "he_base")
    total = {k: sum(s[k] for s in stats.values()) for k in keys}
    total["transform_dist"] = total["dist_in"] + total["dist_out"]
    total["n_layers"] = len(stats)
    return total
