"""Fast paths for the adapted projections, and the dispatch the attention processor calls.

``adapted_linear(x, weight, bias, method, p_in, p_out, impl="auto")`` computes ``y = H̃ W H x + b`` with one of:

| impl             | where                        | what                                                          |
| ---------------- | ---------------------------- | ------------------------------------------------------------- |
| ``"auto"``       | default                      | ether / ether_plus on CUDA with triton: ``step`` for a model  |
|                  |                              | from ``apply_ether`` (eager, CUDA graph, or torch.compile of  |
|                  |                              | the whole model), else ``act`` / ``fold`` per layer (eager);  |
|                  |                              | ``torch`` otherwise (CPU, oft, naive, compiled single layers) |
| ``"torch"``      | anywhere                     | ``functional.adapted_linear``: maps on activations, PyTorch   |
| ``"torch_fold"`` | anywhere                     | plain PyTorch, the maps folded into the weight every call     |
| ``"act"``        | CUDA + triton                | fused Triton maps on activations (``fused.py``)               |
| ``"fold"``       | CUDA + triton                | fused Triton fold of one layer's weight every call (under     |
|                  |                              | torch.compile: one custom op per layer, ``ops.py``)           |
| ``"step"``       | CUDA + triton, a whole model | a few launches per block width fold every layer of the model  |
|                  |                              | per forward (``step.py``; ETHER ``grouped.py``, ETHER+        |
|                  |                              | ``twosided.py``); layers run their own linear. Compiled: one  |
|                  |                              | ``ether_diffusion::step_fold`` custom op per forward (ops.py) |

``"auto"`` picks ``step`` for a model prepared by ``apply_ether`` (which calls ``attach``) and layer-wise forms
otherwise: an eager training step is bound by kernel launches, and ``step`` adds almost none.

Triton is imported only when a Triton form runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import functional as Fn
from .device import _compiling, _on_device, autocast_dtype, triton_available

IMPLS = ("auto", "torch", "torch_fold", "act", "fold", "step")
FUSED_METHODS = ("ether", "ether_plus")


def choose_form(method: str, tokens: int, in_features: int, out_features: int, training: bool) -> str:
    """'act' or 'fold' for one layer-wise call (models prepared by ``apply_ether`` use ``step`` instead).

    Without gradients folding costs O(f d) against O(tokens d): it wins once tokens >= out_features. With gradients
    the activation form was faster on every SD 1.5 attention shape at batch 1, 4 and 8 (H200, n_blocks 4,
    benchmarks/results/layer_forms_NVIDIA_H200_n4.log: summed over the UNet's layers, ether 87 ms against 108 ms
    for fold at bs 4, ether_plus 130 ms against 173 ms): each call is bound by launches, and ``act`` has fewer.
    """
    if not training:
        return "fold" if tokens >= out_features else "act"
    return "act"


def fold_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str, p_in: Fn.Params,
                p_out: Fn.Params | None = None) -> torch.Tensor:
    """Plain-PyTorch fold-per-call: ``F.linear(x, H̃ W H, b)``; gradients reach the parameters through the fold."""
    return F.linear(x, Fn.fold_weight(weight, method, p_in, p_out), bias)


def adapted_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
                   p_in: Fn.Params, p_out: Fn.Params | None = None, impl: str = "auto") -> torch.Tensor:
    """``y = H̃ W H x + b``: x (..., d), weight (f, d), bias (f,) or None -> (..., f), one layer on its own. See
    the module table; ``step`` is not a per-layer form (a model's processors run it through ``StepFold``)."""
    if impl == "auto":
        if method not in FUSED_METHODS or not _on_device(x) or _compiling() or not triton_available():
            return Fn.adapted_linear(x, weight, bias, method, p_in, p_out)
        impl = choose_form(method, x.numel() // x.shape[-1], weight.shape[1], weight.shape[0],
                           torch.is_grad_enabled())
    if impl == "step":
        raise RuntimeError("impl='step' folds a whole model: it runs in the processors of a CUDA model prepared by "
                           "apply_ether; use impl='auto'")
    if impl == "torch":
        return Fn.adapted_linear(x, weight, bias, method, p_in, p_out)
    if impl == "torch_fold":
        return fold_linear(x, weight, bias, method, p_in, p_out)
    if impl not in ("act", "fold"):
        raise ValueError(f"impl={impl!r} is unknown; choose one of {IMPLS}")
    if method not in FUSED_METHODS:
        raise ValueError(f"impl={impl!r} covers {FUSED_METHODS}, not {method!r}; use impl='torch'")
    if not _on_device(x) or not triton_available():
        raise RuntimeError(f"impl={impl!r} needs a CUDA tensor and triton (pip install triton); use impl='torch'")
    if impl == "fold" and _compiling():  # the fold as one custom op the compiler keeps whole (``ops.py``)
        if weight.requires_grad:  # the op gives W no gradient: a trainable base weight takes the plain path
            return Fn.adapted_linear(x, weight, bias, method, p_in, p_out)
        from .fused import SIGNS
        from .ops import folded_linear

        return folded_linear(x, weight, bias, *SIGNS[method], p_in["u"], p_in.get("v"),
                             *((p_out["u"], p_out.get("v")) if p_out is not None else (None, None)),
                             autocast_dtype(x))
    from .fused import adapted_linear as fused_linear

    return fused_linear(x, weight, bias, method, p_in, p_out, form=impl)


def attach(model: torch.nn.Module) -> None:
    """Share one ``StepFold`` among the processors of ``model`` (called by ``apply_ether``; cheap, lazy)."""
    from ..projection import get_projection
    from ..state import get_state
    from .step import StepFold, clear

    detach(model)
    state = get_state(model)
    if state.config.method not in FUSED_METHODS or not triton_available():
        return
    # each projection's own nn.Linear (a LoRA layer's base layer): the step form serves a projection while that
    # very module is called bare (``projection.is_plain``)
    layers = [(proc, p, _base(get_projection(model.get_submodule(name), p)))
              for name, proc in state.processors.items() for p in proc.shapes]
    cross = frozenset(id(proc) for name, proc in state.processors.items()
                      if getattr(model.get_submodule(name), "is_cross_attention", False))
    group = StepFold(layers, state.config.method, state.config.n_blocks, cross)
    group.forwards = state.forwards
    for proc, _, _ in layers:
        proc._ether_step = group
    model._ether_step_fold = group
    model.register_forward_pre_hook(clear)  # what a compiled forward folded never reaches the next one
    model.register_forward_hook(clear)


def _base(module: torch.nn.Module) -> torch.nn.Module:
    get_base = getattr(module, "get_base_layer", None)
    return get_base() if get_base is not None else module


def detach(model: torch.nn.Module) -> None:
    """Undo ``attach``: the model's step-fold hooks and its StepFold (the processors keep theirs until dropped)."""
    from .step import clear

    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for k in [k for k, h in hooks.items() if h is clear]:
            del hooks[k]
    model.__dict__.pop("_ether_step_fold", None)


def set_impl(model: torch.nn.Module, impl: str) -> None:
    """Use ``impl`` (one of IMPLS) for every ETHER processor of ``model`` (the default is "auto")."""
    from ..state import get_state

    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown; choose one of {IMPLS}")
    for proc in get_state(model).processors.values():
        proc.impl = impl


__all__ = ["IMPLS", "adapted_linear", "attach", "autocast_dtype", "choose_form", "detach", "fold_linear", "set_impl", "triton_available"]
