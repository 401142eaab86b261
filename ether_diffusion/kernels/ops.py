"""The per-layer Triton fold as a ``torch.library`` custom op, so that ``torch.compile`` can take it whole.

    W' = fold(W, u_in, v_in, u_out, v_out) = H̃ W H      (f, d) in the compute dtype, O(f d)

Under compilation a layer runs ``F.linear(x, fold(...), b)``: the compiler owns the GEMMs (including
``dL/dW' = dyᵀ x`` in backward) and sees the fold and its backward as two opaque ops with known output shapes.
Autograd: ``dL/dW'`` -> the maps' gradients through ``fused.fold_backward``; W gets none (it is frozen).
Import lazily (``kernels`` does): defining the ops imports triton.
"""

from __future__ import annotations

import torch

from .fused import fold, fold_backward


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
