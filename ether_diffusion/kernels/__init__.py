"""Triton fast paths for ETHER / ETHER+ projections: a leaf of the package (it imports nothing of ether_diffusion).

    device              where the Triton forms run, the compute dtype, each method's map signs (``SIGNS``)
    step_fold           ``StepFold``: every adapted layer of a model folded at once, once per forward (the fast path)
    step_fold_ops       that fold for autograd: eagerly, and as custom ops under torch.compile; its one plan cache
    layout              the work tables and flat layouts both plans share
    one_sided           the plan of ETHER (W H)
    two_sided           the plan of ETHER+ (H̃ W H), never forming W H
    one_sided_kernels   the Triton kernels of the one-sided plan, and the finishing kernel both plans share
    two_sided_kernels   the Triton kernels of the two-sided plan
    triton_reflect      the Triton kernels of the map on the rows of a tensor (activations or weights)
    act_form            ``act_linear``: the per-layer fallback, the maps on the activations

The processor picks the form of each projection (``layer.per_layer_linear`` and the table in ``layer``). Triton is
imported only when a Triton form runs: ``act_linear`` is loaded on first use, the plans when a model first folds.
"""

from __future__ import annotations

from typing import Any

from .device import SIGNS, TRITON_METHODS, autocast_dtype, is_compiling, on_device, triton_available
from .step_fold import StepFold

__all__ = ["SIGNS", "TRITON_METHODS", "StepFold", "autocast_dtype", "is_compiling", "on_device", "triton_available"]


def __getattr__(name: str) -> Any:
    if name == "act_linear":  # imports triton
        from .act_form import act_linear

        globals()["act_linear"] = act_linear
        return act_linear
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
