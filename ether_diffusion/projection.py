"""How an adapted projection calls its module: the module itself (``attn.to_q``, ...), whatever wraps or hooks it.

A bare ``nn.Linear`` (``is_plain``) may be replaced by its weight in a fast path (``kernels``); anything else (a PEFT LoRA
layer, an accelerate offload hook, a forward hook) is called as a module, so what it adds keeps working.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import functional as Fn


def get_projection(attn: nn.Module, projection: str) -> nn.Module:
    return attn.to_out[0] if projection == "to_out.0" else getattr(attn, projection)


def is_hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` runs more than its class's ``forward``: forward (pre-)hooks, global ones, or a
    replaced ``forward`` (accelerate's offload hooks replace it)."""
    return bool(module._forward_pre_hooks or module._forward_hooks or "forward" in module.__dict__
                or _GLOBAL_HOOKS[0] or _GLOBAL_HOOKS[1])


def is_plain(module: nn.Module) -> bool:
    """Whether ``module`` is a bare ``nn.Linear`` that nothing wraps or hooks, so that reading its weight computes
    what calling it would (a PEFT LoRA layer, an accelerate offload hook or a forward hook make it not plain)."""
    return type(module) is nn.Linear and not is_hooked(module)


_GLOBAL_HOOKS = (torch.nn.modules.module._global_forward_pre_hooks, torch.nn.modules.module._global_forward_hooks)


def compose_linear(x: torch.Tensor, linear: nn.Module, method: str, p_in: Fn.Params,
                   p_out: Fn.Params | None = None) -> torch.Tensor:
    """``y = H̃ (L(H x) - b) + b`` by calling the projection module ``L`` (whatever wraps or hooks it runs): for a
    LoRA layer ``L(h) = (W + s B A) h + b``, so ``y = H̃ (W + s B A) H x + b``. x (..., d) -> (..., f).

    The bias ``b = L(0)`` comes out of the same call (one zero row appended): it may live on another device
    until the module runs (offload).
    """
    h = Fn.transform(x, method, p_in)  # (..., d)
    if p_out is None:
        return linear(h)
    z, b = call_without_bias(linear, h)
    y = Fn.transform(z, method, p_out)
    return y if b is None else y + b


def call_without_bias(linear: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(L(h) - b, b) for an affine module L with bias b = L(0) (None where it has no bias)."""
    if getattr(linear, "bias", None) is None:
        return linear(h), None
    rows = h.reshape(-1, h.shape[-1])  # (M, d)
    out = linear(torch.cat([rows, rows.new_zeros(1, rows.shape[-1])]))  # (M + 1, f): the last row is b
    b = out[-1]
    return (out[:-1] - b).reshape(*h.shape[:-1], out.shape[-1]), b


def compose_per_sample(x: torch.Tensor, linear: nn.Module, method: str, p_in: Fn.Params, p_out: Fn.Params | None,
                       active: torch.Tensor) -> torch.Tensor:
    """``compose_linear`` with parameters stacked per sample (B, ...): x (B, N, d) -> (B, N, f); sample i with
    ``active[i]`` false runs the module alone."""
    keep = active.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1)
    h = torch.where(keep, Fn.transform_per_sample(x, method, p_in), x)
    if p_out is None:
        return linear(h)
    z, b = call_without_bias(linear, h)
    y = torch.where(keep, Fn.transform_per_sample(z, method, p_out), z)
    return y if b is None else y + b
