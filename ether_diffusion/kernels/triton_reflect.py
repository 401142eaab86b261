"""Triton kernels for the block-diagonal rank-2 maps of ETHER / ETHER+, on the rows of a 2-D tensor.

One map covers both methods, per block ``i`` of ``b = d / n`` columns (û, v̂ the unit vectors of u, v):

    y_i = x_i + su (x_i·û_i) û_i + sv (x_i·v̂_i) v̂_i          ether: su = -2, no v;  ether_plus: su = -1, sv = +1

The map is symmetric, so its transpose (the backward for x) is the same map. The rows can be activations
(``M = B*N`` tokens) or the rows / columns of a weight (``M = f``: the map folded into ``W``); the kernels take any
strides, and read and write any float dtype, computing in float32.

- ``reflect``:          y (M, d) = map(x) [+ bias]                                one pass: read x, write y
- ``reflect_backward``: dx = map(g) and per-program partial sums of ``dL/dû, dL/dv̂`` (treating û, v̂ as free):
                        su Σ_rows [(x·û) g + (g·û) x] (and the same with sv, v̂)   one pass: read g, x, write dx
- ``unit_backward``:    sums the partials and takes them through û = u / ‖u‖: du = (dû - (dû·û) û) / ‖u‖

The column tile is (NB, BB) = (next_pow2(n), next_pow2(b)) so any split works (b = 20 for 320 / 16, b = 1 for n = d);
masked lanes never touch memory. This module imports triton: import it lazily (``ether_diffusion.kernels`` does).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

EPS = 1e-12  # as functional._EPS
_TILE_FWD = 8192  # fp32 elements of the (BM, NB, BB) tile a program holds
_TILE_BWD = 4096
_FINISH_TILE = 4096


@triton.jit
def _unit_rows(ptr, cols, cmask, eps):
    # (NB, BB) block vectors, each scaled to unit length
    u = tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    nrm = tl.sqrt(tl.sum(u * u, axis=1))  # (NB,)
    return u / tl.maximum(nrm, eps)[:, None]


@triton.jit
def _reflect_kernel(X, Y, U, V, BIAS, M, n, b, sxm, sxk, sym, syk, su, sv, eps,
                    HAS_V: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BM: tl.constexpr, NB: tl.constexpr, BB: tl.constexpr):
    pid = tl.program_id(0)
    jb = tl.arange(0, NB)[:, None]
    ib = tl.arange(0, BB)[None, :]
    cmask = (jb < n) & (ib < b)  # (NB, BB)
    cols = jb * b + ib  # column index in [0, d)
    uh = _unit_rows(U, cols, cmask, eps)[None]  # (1, NB, BB)
    rows = (pid * BM + tl.arange(0, BM)).to(tl.int64)[:, None, None]  # (BM, 1, 1)
    mask = (rows < M) & cmask[None]
    x = tl.load(X + rows * sxm + cols[None] * sxk, mask=mask, other=0.0).to(tl.float32)  # (BM, NB, BB)
    y = x + su * tl.sum(x * uh, axis=2)[:, :, None] * uh
    if HAS_V:
        vh = _unit_rows(V, cols, cmask, eps)[None]
        y += sv * tl.sum(x * vh, axis=2)[:, :, None] * vh
    if HAS_BIAS:
        y += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None]
    tl.store(Y + rows * sym + cols[None] * syk, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _reflect_backward_kernel(G, X, DX, U, V, P, M, n, b, d, sgm, sgk, sxm, sxk, sdm, sdk, su, sv, eps,
                             HAS_V: tl.constexpr, WRITE_DX: tl.constexpr,
                             BM: tl.constexpr, NB: tl.constexpr, BB: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    jb = tl.arange(0, NB)[:, None]
    ib = tl.arange(0, BB)[None, :]
    cmask = (jb < n) & (ib < b)
    cols = jb * b + ib
    uh = _unit_rows(U, cols, cmask, eps)[None]
    vh = uh
    if HAS_V:
        vh = _unit_rows(V, cols, cmask, eps)[None]
    # per-lane accumulators, reduced over rows once at the end
    acc_u = tl.zeros((BM, NB, BB), dtype=tl.float32)
    acc_v = tl.zeros((BM, NB, BB), dtype=tl.float32)
    for t in range(pid, tl.cdiv(M, BM), nprog):  # a persistent loop over row tiles: few partial rows
        rows = (t * BM + tl.arange(0, BM)).to(tl.int64)[:, None, None]
        mask = (rows < M) & cmask[None]
        g = tl.load(G + rows * sgm + cols[None] * sgk, mask=mask, other=0.0).to(tl.float32)  # (BM, NB, BB)
        x = tl.load(X + rows * sxm + cols[None] * sxk, mask=mask, other=0.0).to(tl.float32)
        gu = tl.sum(g * uh, axis=2)[:, :, None]  # (BM, NB, 1)
        xu = tl.sum(x * uh, axis=2)[:, :, None]
        acc_u += xu * g + gu * x
        if WRITE_DX:
            dx = g + su * gu * uh
        if HAS_V:
            gv = tl.sum(g * vh, axis=2)[:, :, None]
            xv = tl.sum(x * vh, axis=2)[:, :, None]
            acc_v += xv * g + gv * x
            if WRITE_DX:
                dx += sv * gv * vh
        if WRITE_DX:
            tl.store(DX + rows * sdm + cols[None] * sdk, dx.to(DX.dtype.element_ty), mask=mask)
    # P (programs, 2, d): [dL/dû, dL/dv̂] of this program's rows
    tl.store(P + pid * 2 * d + cols, su * tl.sum(acc_u, axis=0), mask=cmask)
    if HAS_V:
        tl.store(P + pid * 2 * d + d + cols, sv * tl.sum(acc_v, axis=0), mask=cmask)


@triton.jit
def _unit_backward_kernel(P, U, V, DU, DV, R, b, d, eps,
                          HAS_V: tl.constexpr, RB: tl.constexpr, BB: tl.constexpr):
    j = tl.program_id(0)  # one block
    ib = tl.arange(0, BB)
    cm = ib < b
    cols = j * b + ib
    acc_u = tl.zeros((BB,), dtype=tl.float32)
    acc_v = tl.zeros((BB,), dtype=tl.float32)
    for r0 in range(0, R, RB):
        r = (r0 + tl.arange(0, RB))[:, None]
        m = (r < R) & cm[None, :]
        acc_u += tl.sum(tl.load(P + r * 2 * d + cols[None, :], mask=m, other=0.0), axis=0)
        if HAS_V:
            acc_v += tl.sum(tl.load(P + r * 2 * d + d + cols[None, :], mask=m, other=0.0), axis=0)
    u = tl.load(U + cols, mask=cm, other=0.0).to(tl.float32)
    nu = tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)
    uh = u / nu
    tl.store(DU + cols, (acc_u - tl.sum(acc_u * uh, axis=0) * uh) / nu, mask=cm)
    if HAS_V:
        v = tl.load(V + cols, mask=cm, other=0.0).to(tl.float32)
        nv = tl.maximum(tl.sqrt(tl.sum(v * v, axis=0)), eps)
        vh = v / nv
        tl.store(DV + cols, (acc_v - tl.sum(acc_v * vh, axis=0) * vh) / nv, mask=cm)


# --------------------------------------------------------------------------- launchers
def _pow2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


@functools.lru_cache(maxsize=None)
def _tile(n: int, b: int, budget: int) -> tuple[int, int, int, int]:
    NB, BB = _pow2(n), _pow2(b)
    BM = max(1, min(256, budget // (NB * BB)))
    warps = 8 if BM * NB * BB >= 8192 else 4
    return BM, NB, BB, warps


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def reflect(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, su: float, sv: float,
            out: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, d) any strides, u/v (n, b) contiguous -> y (M, d) = map(x) (+ bias (d,)); written into ``out`` if given."""
    M, d = x.shape
    n, b = u.shape
    assert n * b == d, (x.shape, u.shape)
    if out is None:
        out = torch.empty((M, d), device=x.device, dtype=out_dtype or x.dtype)
    BM, NB, BB, warps = _tile(n, b, _TILE_FWD)
    u = u.contiguous()
    v = u if v is None else v.contiguous()
    _reflect_kernel[(triton.cdiv(M, BM),)](
        x, out, u, v, u if bias is None else bias, M, n, b, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        float(su), float(sv), EPS, HAS_V=sv != 0, HAS_BIAS=bias is not None, BM=BM, NB=NB, BB=BB,
        num_warps=warps)
    return out


def reflect_backward(g: torch.Tensor, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, su: float,
                     sv: float, write_dx: bool = True, dx_dtype: torch.dtype | None = None,
                     dx_out: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """g, x (M, d) -> (dx (M, d) = map(g) or None, partials (R, 2, d) float32 of dL/dû, dL/dv̂)."""
    M, d = x.shape
    n, b = u.shape
    BM, NB, BB, warps = _tile(n, b, _TILE_BWD)
    grid = max(1, min(triton.cdiv(M, BM), 4 * _sm_count(x.device)))
    partials = torch.empty((grid, 2, d), device=x.device, dtype=torch.float32)
    dx = None
    if write_dx:
        dx = dx_out if dx_out is not None else torch.empty((M, d), device=x.device, dtype=dx_dtype or g.dtype)
    u = u.contiguous()
    v = u if v is None else v.contiguous()
    tgt = dx if dx is not None else g
    _reflect_backward_kernel[(grid,)](
        g, x, tgt, u, v, partials, M, n, b, d, g.stride(0), g.stride(1), x.stride(0), x.stride(1),
        tgt.stride(0), tgt.stride(1), float(su), float(sv), EPS, HAS_V=sv != 0, WRITE_DX=write_dx,
        BM=BM, NB=NB, BB=BB, num_warps=warps)
    return dx, partials


def unit_backward(partials: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """partials (R, 2, d) -> (du (n, b), dv (n, b) or None) in float32, through û = u / max(‖u‖, eps)."""
    R, _, d = partials.shape
    n, b = u.shape
    BB = _pow2(b)
    RB = max(1, min(64, _FINISH_TILE // BB))
    du = torch.empty((n, b), device=u.device, dtype=torch.float32)
    dv = torch.empty_like(du) if v is not None else None
    _unit_backward_kernel[(n,)](
        partials, u.contiguous(), u if v is None else v.contiguous(), du, du if dv is None else dv, R, b, d, EPS,
        HAS_V=v is not None, RB=RB, BB=BB, num_warps=4)
    return du.to(u.dtype), (dv.to(v.dtype) if v is not None else None)
