"""Triton fast paths for ETHER / ETHER+ projections: a leaf of the package (it imports nothing of ether_diffusion).

| module                                   | what it holds                                                            |
| ---------------------------------------- | ------------------------------------------------------------------------ |
| ``device``                               | where the Triton forms run, the compute dtype, each method's map signs   |
| ``step_fold``                            | ``StepFold``: every layer of a model folded at once, once per forward    |
| ``step_fold_ops``                        | that fold for autograd, eager and as custom ops, and its one plan cache  |
| ``layout``                               | the work tables and flat layouts both plans share                        |
| ``one_sided`` / ``two_sided``            | the plans of ETHER (W H) and of ETHER+ (H̃ W H)                           |
| ``one_sided_kernels`` / ``two_sided_kernels`` / ``triton_reflect`` | the Triton kernels                             |
| ``act_form``                             | ``act_linear``: the per-layer fallback, the maps on the activations      |

The fast path is the step fold; the fallback, for a projection the step fold does not serve, is ``act_linear``
(the processor chooses: ``layer.per_layer_linear``). Triton is imported only when a Triton form runs:
``act_linear`` is loaded on first use.
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
