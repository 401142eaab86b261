"""The per-layer fallback of ETHER / ETHER+ on the Triton kernels: the maps act on the activations of one layer.

    y = map_out(map_in(x) Wᵀ) + b        extra work O(M d) (+ O(M f) for ETHER+), M = tokens

Backward reuses the frozen layer's dx GEMM. Saves x (and z = h Wᵀ for an output side). Agrees with
``functional.adapted_linear`` (tests/gpu). Compute dtype: the autocast dtype when autocast is on, else x's dtype;
the adapter parameters and their gradients stay float32. Imports triton: import lazily (``kernels`` does).
"""

from __future__ import annotations

import torch

from .device import SIGNS, autocast_dtype
from .triton_reflect import reflect, reflect_backward, unit_backward


def rows(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (M, d) with a unit column stride (a view when possible)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def act_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype):
    """x2 (M, d) -> (y (M, f), z (M, f) before the output map or None)."""
    h = reflect(x2, u_in, v_in, su, sv, out_dtype=dtype)  # (M, d)
    w = weight.to(dtype)
    if u_out is None:
        b = None if bias is None else bias.to(dtype)
        return (torch.addmm(b, h, w.t()) if b is not None else h @ w.t()), None
    z = h @ w.t()  # (M, f)
    return reflect(z, u_out, v_out, su, sv, bias=bias), z


class ActLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, u_in, v_in, u_out, v_out, su, sv):
        dtype = autocast_dtype(x)
        x2 = rows(x)
        y, z = act_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype)
        ctx.save_for_backward(x2, weight, bias, u_in, v_in, u_out, v_out, z)
        ctx.meta = (su, sv, dtype, x.shape, x.dtype)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, weight, bias, u_in, v_in, u_out, v_out, z = ctx.saved_tensors
        su, sv, dtype, x_shape, x_dtype = ctx.meta
        need = ctx.needs_input_grad
        dy2 = rows(dy).to(dtype)  # (M, f)
        w = weight.to(dtype)
        dw = db = du_out = dv_out = None
        if need[2]:
            db = dy2.float().sum(0).to(bias.dtype)
        if u_out is not None:  # y = map_out(z) + b
            dz, p_out = reflect_backward(dy2, z, u_out, v_out, su, sv)
            du_out, dv_out = unit_backward(p_out, u_out, v_out)
        else:
            dz = dy2
        dh = dz @ w  # (M, d): the frozen layer's own dx GEMM
        dx, p_in = reflect_backward(dh, x2, u_in, v_in, su, sv, write_dx=need[0], dx_dtype=x_dtype)
        du_in, dv_in = unit_backward(p_in, u_in, v_in)
        if need[1]:
            dw = (dz.t() @ reflect(x2, u_in, v_in, su, sv, out_dtype=dtype)).to(weight.dtype)
        return (dx.view(x_shape) if dx is not None else None, dw, db, du_in, dv_in, du_out, dv_out, None, None)


def act_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
               p_in: dict, p_out: dict | None = None) -> torch.Tensor:
    """``y = H̃ W H x + b`` for ``ether`` / ``ether_plus``, the maps on the activations, on the Triton kernels.

    x (..., d) on a CUDA device, weight (f, d), bias (f,) or None -> (..., f).
    """
    su, sv = SIGNS[method]
    u_in, v_in = p_in["u"], p_in.get("v")
    u_out, v_out = (p_out["u"], p_out.get("v")) if p_out is not None else (None, None)
    if not torch.is_grad_enabled() or not any(
            t is not None and t.requires_grad for t in (x, weight, bias, u_in, v_in, u_out, v_out)):
        # inference: no autograd bookkeeping
        y, _ = act_forward(rows(x), weight, bias, su, sv, u_in, v_in, u_out, v_out, autocast_dtype(x))
        return y.view(*x.shape[:-1], weight.shape[0])
    return ActLinearFn.apply(x, weight, bias, u_in, v_in, u_out, v_out, su, sv)
