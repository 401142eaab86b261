"""The Triton folds as ``torch.library`` custom ops, so that ``torch.compile`` can take them whole.

    ether_diffusion::fold       one layer:   W' = H̃ W H                      (f, d) in the compute dtype, O(f d)
    ether_diffusion::step_fold  every layer: flat W'_0 ... W'_{L-1}        (Σ f d,) (the step form, ``step.py``)

Under compilation a layer runs ``F.linear(x, W', b)``: the compiler owns the GEMMs (including ``dL/dW' = dyᵀ x`` in
backward) and sees a fold and its backward as two opaque ops with known output shapes. Autograd: ``dL/dW'`` -> the
maps' gradients; W gets none (it is frozen). Import lazily (``kernels`` does): defining the ops imports triton.
"""

from __future__ import annotations

import torch

from .fused import fold, fold_backward
from .layout import split_grads, split_weights
from .plans import make_plan
from .twosided import column_partials


@torch.library.custom_op("ether_diffusion::fold", mutates_args=())
def fold_op(weight: torch.Tensor, u_in: torch.Tensor, v_in: torch.Tensor | None, u_out: torch.Tensor | None,
            v_out: torch.Tensor | None, su: float, sv: float, dtype: torch.dtype) -> torch.Tensor:
    return fold(weight, su, sv, u_in, v_in, u_out, v_out, dtype)[0]


@fold_op.register_fake
def _(weight, u_in, v_in, u_out, v_out, su, sv, dtype):
    return weight.new_empty(weight.shape, dtype=dtype)


@torch.library.custom_op("ether_diffusion::fold_backward", mutates_args=())
def fold_backward_op(gw: torch.Tensor, weight: torch.Tensor, u_in: torch.Tensor, v_in: torch.Tensor | None,
                     u_out: torch.Tensor | None, v_out: torch.Tensor | None, su: float,
                     sv: float) -> list[torch.Tensor]:
    # [du_in, dv_in, du_out, dv_out] without the absent ones
    _, *grads = fold_backward(gw, weight, u_in, v_in, u_out, v_out, su, sv)
    return [g for g in grads if g is not None]


@fold_backward_op.register_fake
def _(gw, weight, u_in, v_in, u_out, v_out, su, sv):
    return [p.new_empty(p.shape, dtype=torch.float32) for p in (u_in, v_in, u_out, v_out) if p is not None]


def _setup(ctx, inputs, output):
    weight, u_in, v_in, u_out, v_out, su, sv, _ = inputs
    ctx.save_for_backward(weight, u_in, v_in, u_out, v_out)
    ctx.signs = (su, sv)


def _backward(ctx, gw):
    weight, u_in, v_in, u_out, v_out = ctx.saved_tensors
    grads = iter(fold_backward_op(gw, weight, u_in, v_in, u_out, v_out, *ctx.signs))
    params = [next(grads) if p is not None else None for p in (u_in, v_in, u_out, v_out)]
    return None, *params, None, None, None


fold_op.register_autograd(_backward, setup_context=_setup)


def folded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, su: float, sv: float,
                  u_in, v_in, u_out, v_out, dtype: torch.dtype) -> torch.Tensor:
    """``F.linear(x, H̃ W H, b)`` with the fold as one op (x (..., d) -> (..., f))."""
    w = fold_op(weight, u_in, v_in, u_out, v_out, su, sv, dtype)
    return torch.nn.functional.linear(x.to(dtype), w, None if bias is None else bias.to(dtype))


# ---------------------------------------------------------------------------------------- the whole model at once
_PLANS: dict[tuple, object] = {}  # key of _plan -> plan; a few models at most


def _layers(weights: list[torch.Tensor], params: list[torch.Tensor]) -> list[tuple]:
    # params: per layer u (ETHER) or u_in, v_in, u_out, v_out (ETHER+) -> (u_in, v_in, u_out, v_out) per layer
    k = len(params) // len(weights)
    per = [params[i * k:(i + 1) * k] for i in range(len(weights))]
    return [tuple(p) + (None,) * (4 - k) for p in per]


def _plan(weights: list[torch.Tensor], params: list[torch.Tensor], n: int):
    # runs in every compiled forward and backward, over up to 640 tensors: addresses, and the weights' shapes,
    # strides and dtypes, which with n and the parameter count fix every parameter's shape (one method per model);
    # the parameters share one dtype (a plan asserts it), so the first one's stands for all
    key = (n, len(params), params[0].dtype, *[(w.data_ptr(), w.shape, w.stride(), w.dtype) for w in weights],
           *[p.data_ptr() for p in params])
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 4:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = make_plan(list(weights), _layers(weights, params), n)
    return plan


@torch.library.custom_op("ether_diffusion::step_fold", mutates_args=())
def step_fold_op(weights: list[torch.Tensor], params: list[torch.Tensor], n: int, su: float, sv: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # -> (flat W' (Σ f d,) in dtype, what the backward needs: ETHER+'s column sums, ETHER an empty tensor)
    flat, saved = _plan(weights, params, n).fold(dtype, su, sv)
    return flat, (saved[0] if saved else flat.new_empty(0, dtype=torch.float32))


@step_fold_op.register_fake
def _(weights, params, n, su, sv, dtype):
    shapes = [tuple(w.shape) for w in weights]
    saved = column_partials(shapes, n) if len(params) == 4 * len(weights) else 0
    return (weights[0].new_empty(sum(f * d for f, d in shapes), dtype=dtype),
            weights[0].new_empty(saved, dtype=torch.float32))


@torch.library.custom_op("ether_diffusion::step_fold_backward", mutates_args=())
def step_fold_backward_op(g: torch.Tensor, saved: torch.Tensor, weights: list[torch.Tensor],
                          params: list[torch.Tensor], n: int, su: float, sv: float) -> torch.Tensor:
    # g: dL/dW' (Σ f d,) -> every parameter's gradient, float32, laid out by ``grouped.grad_slots``
    return _plan(weights, params, n).backward(g.contiguous(), (saved,), su, sv)


@step_fold_backward_op.register_fake
def _(g, saved, weights, params, n, su, sv):
    return g.new_empty(sum(p.numel() for p in params), dtype=torch.float32)


def _step_setup(ctx, inputs, output):
    weights, params, n, su, sv, _ = inputs
    ctx.save_for_backward(output[1], *weights, *params)
    ctx.counts, ctx.args = len(weights), (n, su, sv)


def _step_backward(ctx, g, _):
    saved, *tensors = ctx.saved_tensors
    weights, params = tensors[:ctx.counts], tensors[ctx.counts:]
    buf = step_fold_backward_op(g, saved, weights, params, *ctx.args)
    return [None] * len(weights), split_grads(buf, tuple(tuple(p.shape) for p in params)), None, None, None, None


step_fold_op.register_autograd(_step_backward, setup_context=_step_setup)


def step_fold(weights: list[torch.Tensor], prm: list[tuple], n: int, su: float, sv: float,
              dtype: torch.dtype, shapes: list[tuple]) -> list[torch.Tensor]:
    """Every layer's W' = H̃ W H through ``ether_diffusion::step_fold``, as one view of the flat buffer per ``shapes``
    entry (a layer's (f, d), or adjacent layers' (Σ f, d)); ``prm[l]`` = (u_in, v_in, u_out, v_out), None where
    absent (all layers alike)."""
    params = [p for ps in prm for p in ps if p is not None]
    flat, _ = step_fold_op(weights, params, n, su, sv, dtype)
    return split_weights(flat, shapes)
