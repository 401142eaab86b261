"""ETHER / ETHER+ linear layers on the Triton kernels, as autograd functions. Two forms of one function:

- ``act``:  the maps act on activations.  y = map_out(map_in(x) Wᵀ) + b.  Extra work O(M d) (+ O(M f) for ETHER+);
            backward reuses the frozen layer's dx GEMM. Saves x (and z = h Wᵀ for an output side).
- ``fold``: the maps are folded into the weight every call: W' = H̃ W H (O(f d), independent of tokens),
            y = x W'ᵀ + b.
            Backward adds one GEMM, dW' = dyᵀ x (f x d x M), and the O(f d) maps' backward. Saves x; W' is
            recomputed in backward (no weight-sized tensor lives between forward and backward).

Both agree with ``functional.adapted_linear`` (tests/gpu). Compute dtype: the autocast dtype when autocast is on,
else x's dtype; the adapter parameters and their gradients stay float32.
"""

from __future__ import annotations

import torch

from .device import autocast_dtype
from .triton_reflect import reflect, reflect_backward, unit_backward

SIGNS = {"ether": (-2.0, 0.0), "ether_plus": (-1.0, 1.0)}


def _rows(x: torch.Tensor) -> torch.Tensor:
    # (..., d) -> (M, d) with a unit column stride (a view when possible)
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def fold(weight: torch.Tensor, su: float, sv: float, u_in, v_in, u_out, v_out, dtype: torch.dtype,
         keep_inner: bool = False):
    """W' = H̃ W H (f, d) in ``dtype``; with ``keep_inner`` also W1 = W H in float32 (for the backward)."""
    if u_out is None:
        return reflect(weight, u_in, v_in, su, sv, out_dtype=dtype), None
    w1 = reflect(weight, u_in, v_in, su, sv, out_dtype=torch.float32)  # (f, d) rows: w_r H
    w = torch.empty(weight.shape, device=weight.device, dtype=dtype)
    reflect(w1.t(), u_out, v_out, su, sv, out=w.t())  # columns: H̃ (W H)
    return w, (w1 if keep_inner else None)


def fold_backward(gw, weight, u_in, v_in, u_out, v_out, su, sv, w1=None, need_dw=False):
    """dL/dW' (f, d) -> (dL/dW or None, du_in, dv_in, du_out, dv_out) of W' = H̃ W H; ``w1`` = W H in float32
    if at hand (recomputed otherwise, only for an output side)."""
    du_out = dv_out = None
    if u_out is not None:  # W' = H̃ W1: columns of W1 through the output map
        if w1 is None:
            w1 = reflect(weight, u_in, v_in, su, sv, out_dtype=torch.float32)
        gw1 = torch.empty(weight.shape, device=weight.device, dtype=torch.float32)
        _, p_out = reflect_backward(gw.t(), w1.t(), u_out, v_out, su, sv, dx_out=gw1.t())
        du_out, dv_out = unit_backward(p_out, u_out, v_out)
        gw = gw1
    dw, p_in = reflect_backward(gw, weight, u_in, v_in, su, sv, write_dx=need_dw, dx_dtype=weight.dtype)
    du_in, dv_in = unit_backward(p_in, u_in, v_in)
    return dw, du_in, dv_in, du_out, dv_out


def act_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype):
    """x2 (M, d) -> (y (M, f), z (M, f) before the output map or None)."""
    h = reflect(x2, u_in, v_in, su, sv, out_dtype=dtype)  # (M, d)
    w = weight.to(dtype)
    if u_out is None:
        b = None if bias is None else bias.to(dtype)
        return (torch.addmm(b, h, w.t()) if b is not None else h @ w.t()), None
    z = h @ w.t()  # (M, f)
    return reflect(z, u_out, v_out, su, sv, bias=bias), z


def fold_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype):
    w, _ = fold(weight, su, sv, u_in, v_in, u_out, v_out, dtype)
    x2 = x2.to(dtype)
    b = None if bias is None else bias.to(dtype)
    return torch.addmm(b, x2, w.t()) if b is not None else x2 @ w.t()


class _AdaptedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, u_in, v_in, u_out, v_out, su, sv, form):
        dtype = autocast_dtype(x)
        x2 = _rows(x)
        if form == "act":
            y, z = act_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype)
        else:
            y, z = fold_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype), None
        ctx.save_for_backward(x2, weight, bias, u_in, v_in, u_out, v_out, z)
        ctx.meta = (su, sv, form, dtype, x.shape, x.dtype)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, weight, bias, u_in, v_in, u_out, v_out, z = ctx.saved_tensors
        su, sv, form, dtype, x_shape, x_dtype = ctx.meta
        need = ctx.needs_input_grad
        dy2 = _rows(dy).to(dtype)  # (M, f)
        w = weight.to(dtype)
        dx = dw = db = du_in = dv_in = du_out = dv_out = None
        if need[2]:
            db = dy2.float().sum(0).to(bias.dtype)
        if form == "act":
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
        else:
            wf, w1 = fold(weight, su, sv, u_in, v_in, u_out, v_out, dtype, keep_inner=True)
            if need[0]:
                dx = (dy2 @ wf).to(x_dtype)
            gw = dy2.t() @ x2.to(dtype)  # (f, d) = dL/dW'
            dw, du_in, dv_in, du_out, dv_out = fold_backward(gw, weight, u_in, v_in, u_out, v_out, su, sv, w1=w1,
                                                             need_dw=need[1])
        return (dx.view(x_shape) if dx is not None else None, dw, db, du_in, dv_in, du_out, dv_out,
                None, None, None)


def adapted_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
                   p_in: dict, p_out: dict | None = None, form: str = "act") -> torch.Tensor:
    """``y = H̃ W H x + b`` for ``ether`` / ``ether_plus`` on the Triton kernels; ``form`` is "act" or "fold".

    x (..., d) on a CUDA device, weight (f, d), bias (f,) or None -> (..., f).
    """
    su, sv = SIGNS[method]
    u_in, v_in = p_in["u"], p_in.get("v")
    u_out, v_out = (p_out["u"], p_out.get("v")) if p_out is not None else (None, None)
    if not torch.is_grad_enabled() or not any(
            t is not None and t.requires_grad for t in (x, weight, bias, u_in, v_in, u_out, v_out)):
        # inference: no autograd bookkeeping
        dtype = autocast_dtype(x)
        x2 = _rows(x)
        if form == "act":
            y, _ = act_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype)
        else:
            y = fold_forward(x2, weight, bias, su, sv, u_in, v_in, u_out, v_out, dtype)
        return y.view(*x.shape[:-1], weight.shape[0])
    return _AdaptedLinear.apply(x, weight, bias, u_in, v_in, u_out, v_out, su, sv, form)
