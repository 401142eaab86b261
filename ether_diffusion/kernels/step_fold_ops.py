"""The step fold of every layer at once, for autograd: eagerly (``StepFoldFn``) and as ``torch.library`` custom ops
that ``torch.compile`` takes whole (``compiled_step_fold``), both on plans from one cache (``plan_for``).

    ether_diffusion::step_fold           every layer: flat W'_0 ... W'_{L-1} (Σ f d,) in the compute dtype
    ether_diffusion::step_fold_backward  dL/dW' (Σ f d,) -> every parameter's gradient (float32)

Under compilation each layer runs ``F.linear(x, W', b)`` on its view of the flat buffer: the compiler owns the GEMMs
(including ``dL/dW' = dyᵀ x`` in backward) and sees the fold and its backward as two opaque ops with known output
shapes. W gets no gradient (it is frozen). Imports triton: import lazily (``step_fold`` does).
"""

from __future__ import annotations

import torch

from .layout import split_grads, split_weights
from .one_sided import OneSidedPlan
from .two_sided import TwoSidedPlan, column_partials

_PLANS: dict[tuple, object] = {}  # key of plan_for -> plan; a few models at most


def make_plan(weights: list, prm: list[tuple], n: int):
    """The plan for these layers (``prm[l]`` = (u_in, v_in, u_out, v_out), None where absent): two-sided (ETHER+)
    when they carry output-side parameters, else one-sided (ETHER)."""
    return TwoSidedPlan(weights, prm, n) if prm[0][2] is not None else OneSidedPlan(weights, prm, n)


def per_layer(weights: list[torch.Tensor], params: list[torch.Tensor]) -> list[tuple]:
    """params flattened per layer (u for ETHER; u_in, v_in, u_out, v_out for ETHER+) -> (u_in, v_in, u_out, v_out)
    per layer, None where absent (all layers alike)."""
    k = len(params) // len(weights)
    per = [params[i * k:(i + 1) * k] for i in range(len(weights))]
    return [tuple(p) + (None,) * (4 - k) for p in per]


def plan_for(weights: list[torch.Tensor], params: list[torch.Tensor], n: int):
    """The cached plan of these weights and (flattened) parameters, made on first use.

    Runs in every eager fold and in every compiled forward and backward, over up to 640 tensors: the key is their
    addresses and the weights' shapes, strides and dtypes, which with n and the parameter count fix every
    parameter's shape (one method per model); the parameters share one dtype (a plan asserts it), so the first
    one's stands for all.
    """
    key = (n, len(params), params[0].dtype, *[(w.data_ptr(), w.shape, w.stride(), w.dtype) for w in weights],
           *[p.data_ptr() for p in params])
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 4:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = make_plan(list(weights), per_layer(weights, params), n)
    return plan


# ---------------------------------------------------------------------------------------- eager
class StepFoldFn(torch.autograd.Function):
    """params (flattened per layer) -> every layer's W' = H̃ W H as views of one flat buffer, one per ``shapes``
    entry (a layer's (f, d), or several adjacent layers' (Σ f, d))."""

    @staticmethod
    def forward(ctx, plan, dtype, su, sv, shapes, *params):
        ctx.plan, ctx.su, ctx.sv, ctx.shapes = plan, su, sv, shapes
        flat, ctx.saved = plan.fold(dtype, su, sv)
        return tuple(split_weights(flat, shapes))

    @staticmethod
    def backward(ctx, *grads):
        plan = ctx.plan
        dtype = next(g.dtype for g in grads if g is not None)
        g = torch.cat([(gi if gi is not None else torch.zeros(s, device=plan.device, dtype=dtype)).reshape(-1)
                       for gi, s in zip(grads, ctx.shapes)])  # (total,) dL/dW', flat layout
        out = plan.backward(g, ctx.saved, ctx.su, ctx.sv)
        return (None, None, None, None, None, *plan.split_grads(out))


def eager_step_fold(weights: list[torch.Tensor], params: list[torch.Tensor], n: int, su: float, sv: float,
                    dtype: torch.dtype, shapes: list[tuple]) -> tuple[torch.Tensor, ...]:
    """Every layer's W' through ``StepFoldFn``, one view per ``shapes`` entry."""
    return StepFoldFn.apply(plan_for(weights, params, n), dtype, su, sv, shapes, *params)


# ---------------------------------------------------------------------------------------- compiled
@torch.library.custom_op("ether_diffusion::step_fold", mutates_args=())
def step_fold_op(weights: list[torch.Tensor], params: list[torch.Tensor], n: int, su: float, sv: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # -> (flat W' (Σ f d,) in dtype, what the backward needs: ETHER+'s column sums, ETHER an empty tensor)
    flat, saved = plan_for(weights, params, n).fold(dtype, su, sv)
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
    # g: dL/dW' (Σ f d,) -> every parameter's gradient, float32, laid out by ``layout.grad_slots``
    return plan_for(weights, params, n).backward(g.contiguous(), (saved,), su, sv)


@step_fold_backward_op.register_fake
def _(g, saved, weights, params, n, su, sv):
    return g.new_empty(sum(p.numel() for p in params), dtype=torch.float32)


def _setup(ctx, inputs, output):
    weights, params, n, su, sv, _ = inputs
    ctx.save_for_backward(output[1], *weights, *params)
    ctx.counts, ctx.args = len(weights), (n, su, sv)


def _backward(ctx, g, _):
    saved, *tensors = ctx.saved_tensors
    weights, params = tensors[:ctx.counts], tensors[ctx.counts:]
    buf = step_fold_backward_op(g, saved, weights, params, *ctx.args)
    return [None] * len(weights), split_grads(buf, tuple(tuple(p.shape) for p in params)), None, None, None, None


step_fold_op.register_autograd(_backward, setup_context=_setup)


def compiled_step_fold(weights: list[torch.Tensor], params: list[torch.Tensor], n: int, su: float, sv: float,
                       dtype: torch.dtype, shapes: list[tuple]) -> list[torch.Tensor]:
    """Every layer's W' = H̃ W H through ``ether_diffusion::step_fold``, as one view of the flat buffer per ``shapes``
    entry (a layer's (f, d), or adjacent layers' (Σ f, d))."""
    flat, _ = step_fold_op(weights, params, n, su, sv, dtype)
    return split_weights(flat, shapes)
