"""The step-fold form: ONE kernel launch folds the maps of every adapted layer of a model into its weight.

Why: with the frozen model's GPU work split over ~2,000 small kernels, an eager SD 1.5 training step is bound by the
host issuing them, not by the GPU. Any per-layer adapter work costs launches (3 per layer for the fused activation
form: 128 layers -> ~400 launches + autograd nodes). Here a training step costs, for all layers together:

    forward:  1 launch (ether) / 2 (ether_plus): W'_l = H̃_l W_l H_l for every layer l, into one flat buffer
              then each layer runs the frozen model's own  y = x W'_lᵀ + b
    backward: each layer's linear also returns dL/dW'_l (one GEMM, f x d x tokens, in the same autograd node)
              then 2 launches (ether) / 5 (ether_plus) give every layer's dL/du, dL/dv from (dL/dW', W)

The work is O(Σ f d) (~93M weights for SD 1.5's attention) per step, independent of batch and resolution. W' is
recomputed only when a parameter or weight changed (``_version``) or when a new forward reuses a layer (a new
autograd graph), so unmerged sampling folds once and then runs at the merged model's speed.

Tables: every kernel reads a work table of int64 rows (one per layer x block x tile of ``RT`` rows); tensors are
addressed as ``base pointer + element offset``, so one launch reaches every layer's separate weight tensor.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .triton_reflect import EPS

RT = 32  # rows (of W, or columns for the output side) per work item
NCOL = 12  # int64 columns of a work table row: x_off sxm sxk f_off fsm fsk u_off v_off M b c0 r0


@triton.jit
def _unit(PRM, off, ib, cm, eps):
    u = tl.load(PRM + off + ib, mask=cm, other=0.0).to(tl.float32)  # (BB,)
    return u / tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)


@triton.jit
def _gmap_kernel(X, Y, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr,
                 RT: tl.constexpr, NCOL: tl.constexpr):
    # y = x + su (x·û) û + sv (x·v̂) v̂ on rows r0..r0+RT of one block of one layer
    row = TAB + tl.program_id(0) * NCOL
    x_off, sxm, sxk = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2)
    y_off, sym, syk = tl.load(row + 3), tl.load(row + 4), tl.load(row + 5)
    u_off, v_off = tl.load(row + 6), tl.load(row + 7)
    M, b, c0, r0 = tl.load(row + 8), tl.load(row + 9), tl.load(row + 10), tl.load(row + 11)
    ib = tl.arange(0, BB)
    cm = ib < b
    cols = c0 + ib  # (BB,) int64
    uh = _unit(PRM, u_off, ib, cm, eps)[None, :]
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)[None, :]
    for i in range(0, RT, BM):
        rows = r0 + i + tl.arange(0, BM)  # (BM,)
        m = (rows < M)[:, None] & cm[None, :]
        x = tl.load(X + x_off + rows[:, None] * sxm + cols[None, :] * sxk, mask=m, other=0.0).to(tl.float32)
        y = x + su * tl.sum(x * uh, axis=1)[:, None] * uh
        if HAS_V:
            y += sv * tl.sum(x * vh, axis=1)[:, None] * vh
        tl.store(Y + y_off + rows[:, None] * sym + cols[None, :] * syk, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _gmap_backward_kernel(G, X, DX, P, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, WRITE_DX: tl.constexpr,
                          BM: tl.constexpr, BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # g at the table's "f" offsets (dx too), x at its "x" offsets; P[item] = (su Σ[(x·û)g + (g·û)x], same for v)
    k = tl.program_id(0)
    row = TAB + k * NCOL
    x_off, sxm, sxk = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2)
    g_off, sgm, sgk = tl.load(row + 3), tl.load(row + 4), tl.load(row + 5)
    u_off, v_off = tl.load(row + 6), tl.load(row + 7)
    M, b, c0, r0 = tl.load(row + 8), tl.load(row + 9), tl.load(row + 10), tl.load(row + 11)
    ib = tl.arange(0, BB)
    cm = ib < b
    cols = c0 + ib
    uh = _unit(PRM, u_off, ib, cm, eps)[None, :]
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)[None, :]
    acc_u = tl.zeros((BB,), dtype=tl.float32)
    acc_v = tl.zeros((BB,), dtype=tl.float32)
    for i in range(0, RT, BM):
        rows = r0 + i + tl.arange(0, BM)
        m = (rows < M)[:, None] & cm[None, :]
        g = tl.load(G + g_off + rows[:, None] * sgm + cols[None, :] * sgk, mask=m, other=0.0).to(tl.float32)
        x = tl.load(X + x_off + rows[:, None] * sxm + cols[None, :] * sxk, mask=m, other=0.0).to(tl.float32)
        gu = tl.sum(g * uh, axis=1)[:, None]
        xu = tl.sum(x * uh, axis=1)[:, None]
        acc_u += tl.sum(xu * g + gu * x, axis=0)
        dx = g + su * gu * uh
        if HAS_V:
            gv = tl.sum(g * vh, axis=1)[:, None]
            xv = tl.sum(x * vh, axis=1)[:, None]
            acc_v += tl.sum(xv * g + gv * x, axis=0)
            dx += sv * gv * vh
        if WRITE_DX:
            tl.store(DX + g_off + rows[:, None] * sgm + cols[None, :] * sgk, dx.to(DX.dtype.element_ty), mask=m)
    tl.store(P + k * 2 * BB + ib, su * acc_u, mask=cm)
    if HAS_V:
        tl.store(P + k * 2 * BB + BB + ib, sv * acc_v, mask=cm)


@triton.jit
def _gfinish_kernel(P, PRM, OUT, FT, eps, HAS_V: tl.constexpr, BB: tl.constexpr, RB: tl.constexpr):
    # one (layer, side, block): sum its items' partials, then through û = u / ‖u‖ into OUT
    row = FT + tl.program_id(0) * 7
    k0, cnt, u_off, v_off = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3)
    b, gu_off, gv_off = tl.load(row + 4), tl.load(row + 5), tl.load(row + 6)
    ib = tl.arange(0, BB)
    cm = ib < b
    acc_u = tl.zeros((BB,), dtype=tl.float32)
    acc_v = tl.zeros((BB,), dtype=tl.float32)
    for r in range(0, cnt, RB):
        ks = r + tl.arange(0, RB)
        m = (ks < cnt)[:, None] & cm[None, :]
        base = (k0 + ks)[:, None] * 2 * BB + ib[None, :]
        acc_u += tl.sum(tl.load(P + base, mask=m, other=0.0), axis=0)
        if HAS_V:
            acc_v += tl.sum(tl.load(P + base + BB, mask=m, other=0.0), axis=0)
    u = tl.load(PRM + u_off + ib, mask=cm, other=0.0).to(tl.float32)
    nu = tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)
    uh = u / nu
    tl.store(OUT + gu_off + ib, (acc_u - tl.sum(acc_u * uh, axis=0) * uh) / nu, mask=cm)
    if HAS_V:
        v = tl.load(PRM + v_off + ib, mask=cm, other=0.0).to(tl.float32)
        nv = tl.maximum(tl.sqrt(tl.sum(v * v, axis=0)), eps)
        vh = v / nv
        tl.store(OUT + gv_off + ib, (acc_v - tl.sum(acc_v * vh, axis=0) * vh) / nv, mask=cm)


# --------------------------------------------------------------------------- tables
def _offset(t: torch.Tensor, base: torch.Tensor) -> int:
    delta = t.data_ptr() - base.data_ptr()
    assert delta % t.element_size() == 0 and t.dtype == base.dtype
    return delta // t.element_size()


class Plan:
    """Work tables and launch shapes for one set of layers (weights, parameters) at fixed addresses.

    ``shapes[l] = (f, d)``; ``prm[l]`` = (u_in, v_in, u_out, v_out) (None where absent); ``n`` blocks per side.
    Flat buffers (W1, W', dL/dW') hold layer l at ``woff[l]`` as (f, d) row-major.
    """

    def __init__(self, weights: list[torch.Tensor], prm: list[tuple], n: int, sv: float):
        self.n, self.has_v, self.device = n, sv != 0, weights[0].device
        self.shapes = [tuple(w.shape) for w in weights]
        sizes = [f * d for f, d in self.shapes]
        self.woff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.wbase = min(weights, key=lambda t: t.data_ptr())
        params = [p for ps in prm for p in ps if p is not None]
        self.pbase = min(params, key=lambda t: t.data_ptr())
        po = lambda p: _offset(p, self.pbase) if p is not None else 0  # noqa: E731
        # gradient buffer: parameters grouped by shape, so each group's grads are one (L, n, b) tensor's unbind
        self.grad_groups: dict[tuple, list[int]] = {}
        flat_params = [(li, s, p) for li, ps in enumerate(prm) for s, p in enumerate(ps) if p is not None]
        for idx, (_, _, p) in enumerate(flat_params):
            self.grad_groups.setdefault(tuple(p.shape), []).append(idx)
        goff, pos = {}, 0
        for shape, idxs in self.grad_groups.items():
            for i in idxs:
                goff[i] = pos
                pos += int(np.prod(shape))
        self.grad_total = pos
        gof = {(li, s): goff[i] for i, (li, s, _) in enumerate(flat_params)}
        self.n_params = len(flat_params)

        in_rows, out_rows, in_fin, out_fin = [], [], [], []
        self.bb_in = self.bb_out = 1
        for li, ((f, d), w, (u, v, uo, vo)) in enumerate(zip(self.shapes, weights, prm)):
            wo, fo = _offset(w, self.wbase), int(self.woff[li])
            b = d // n
            self.bb_in = max(self.bb_in, b)
            for j in range(n):  # input side: rows of W (f of them), block j of the d columns
                k0 = len(in_rows)
                for r0 in range(0, f, RT):
                    in_rows.append([wo, w.stride(0), w.stride(1), fo, d, 1, po(u) + j * b,
                                    po(v) + j * b if v is not None else 0, f, b, j * b, r0])
                in_fin.append([k0, len(in_rows) - k0, po(u) + j * b, po(v) + j * b if v is not None else 0, b,
                               gof[(li, 0)] + j * b, gof[(li, 1)] + j * b if v is not None else 0])
            if uo is None:
                continue
            bo = f // n
            self.bb_out = max(self.bb_out, bo)
            for j in range(n):  # output side: columns of W1 (d of them), block j of the f rows
                k0 = len(out_rows)
                for r0 in range(0, d, RT):
                    out_rows.append([fo, 1, d, fo, 1, d, po(uo) + j * bo, po(vo) + j * bo, d, bo, j * bo, r0])
                out_fin.append([k0, len(out_rows) - k0, po(uo) + j * bo, po(vo) + j * bo, bo,
                                gof[(li, 2)] + j * bo, gof[(li, 3)] + j * bo])
        dev = self.device
        as_t = lambda rows, w: torch.tensor(np.asarray(rows, dtype=np.int64).reshape(-1, w), device=dev)  # noqa: E731
        self.in_tab, self.in_fin = as_t(in_rows, NCOL), as_t(in_fin, 7)
        self.out_tab = as_t(out_rows, NCOL) if out_rows else None
        self.out_fin = as_t(out_fin, 7) if out_fin else None
        self.bb_in, self.bb_out = triton.next_power_of_2(self.bb_in), triton.next_power_of_2(self.bb_out)

    # ------------------------------------------------------------------ launches
    @staticmethod
    def _bm(bb: int) -> tuple[int, int]:
        bm = max(1, min(RT, 4096 // bb))
        return bm, (8 if bm * bb >= 4096 else 4)

    def map_in(self, out: torch.Tensor, su, sv):
        bm, warps = self._bm(self.bb_in)
        _gmap_kernel[(self.in_tab.shape[0],)](self.wbase, out, self.pbase, self.in_tab, su, sv, EPS,
                                             HAS_V=self.has_v, BM=bm, BB=self.bb_in, RT=RT, NCOL=NCOL,
                                             num_warps=warps)

    def map_out(self, w1: torch.Tensor, out: torch.Tensor, su, sv):
        bm, warps = self._bm(self.bb_out)
        _gmap_kernel[(self.out_tab.shape[0],)](w1, out, self.pbase, self.out_tab, su, sv, EPS,
                                              HAS_V=self.has_v, BM=bm, BB=self.bb_out, RT=RT, NCOL=NCOL,
                                              num_warps=warps)

    def backward_in(self, g: torch.Tensor, grads: torch.Tensor, su, sv):
        bm, warps = self._bm(self.bb_in)
        part = torch.empty((self.in_tab.shape[0], 2, self.bb_in), device=self.device, dtype=torch.float32)
        _gmap_backward_kernel[(self.in_tab.shape[0],)](
            g, self.wbase, g, part, self.pbase, self.in_tab, su, sv, EPS, HAS_V=self.has_v, WRITE_DX=False,
            BM=bm, BB=self.bb_in, RT=RT, NCOL=NCOL, num_warps=warps)
        self._finish(part, self.in_fin, self.bb_in, grads)

    def backward_out(self, g: torch.Tensor, w1: torch.Tensor, dw1: torch.Tensor, grads: torch.Tensor, su, sv):
        bm, warps = self._bm(self.bb_out)
        part = torch.empty((self.out_tab.shape[0], 2, self.bb_out), device=self.device, dtype=torch.float32)
        _gmap_backward_kernel[(self.out_tab.shape[0],)](
            g, w1, dw1, part, self.pbase, self.out_tab, su, sv, EPS, HAS_V=self.has_v, WRITE_DX=True,
            BM=bm, BB=self.bb_out, RT=RT, NCOL=NCOL, num_warps=warps)
        self._finish(part, self.out_fin, self.bb_out, grads)

    def _finish(self, part, fin, bb, grads):
        _gfinish_kernel[(fin.shape[0],)](part, self.pbase, grads, fin, EPS, HAS_V=self.has_v, BB=bb,
                                         RB=max(1, min(64, 4096 // bb)), num_warps=4)

    def split_weights(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """flat (total,) -> per-layer (f, d) views."""
        return [flat[o:o + f * d].view(f, d) for o, (f, d) in zip(self.woff.tolist(), self.shapes)]

    def split_grads(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """buf (grad_total,) -> per-parameter views, in the order of the flattened ``prm``."""
        out: list[torch.Tensor | None] = [None] * self.n_params
        pos = 0
        for shape, idxs in self.grad_groups.items():
            size = int(np.prod(shape))
            for i, g in zip(idxs, buf[pos:pos + size * len(idxs)].view(len(idxs), *shape).unbind(0)):
                out[i] = g
            pos += size * len(idxs)
        return out


class StepFoldFn(torch.autograd.Function):
    """params (flattened per layer) -> every layer's W' = H̃ W H, one output per layer."""

    @staticmethod
    def forward(ctx, plan: Plan, dtype, su, sv, *params):
        ctx.plan, ctx.su, ctx.sv = plan, su, sv
        if plan.out_tab is None:
            flat = torch.empty(plan.total, device=plan.device, dtype=dtype)
            plan.map_in(flat, su, sv)
        else:
            w1 = torch.empty(plan.total, device=plan.device, dtype=torch.float32)
            plan.map_in(w1, su, sv)
            flat = torch.empty(plan.total, device=plan.device, dtype=dtype)
            plan.map_out(w1, flat, su, sv)
        return tuple(plan.split_weights(flat))

    @staticmethod
    def backward(ctx, *grads):
        plan, su, sv = ctx.plan, ctx.su, ctx.sv
        dtype = next(g.dtype for g in grads if g is not None)
        g = torch.cat([(gi if gi is not None else torch.zeros(s, device=plan.device, dtype=dtype)).reshape(-1)
                       for gi, s in zip(grads, plan.shapes)])  # (total,) dL/dW', flat layout
        out = torch.empty(plan.grad_total, device=plan.device, dtype=torch.float32)
        if plan.out_tab is not None:
            w1 = torch.empty(plan.total, device=plan.device, dtype=torch.float32)
            plan.map_in(w1, su, sv)  # recompute W1 = W H
            dw1 = torch.empty_like(w1)
            plan.backward_out(g, w1, dw1, out, su, sv)  # dL/dW1 = H̃ dL/dW', and the output side's grads
            g = dw1
        plan.backward_in(g, out, su, sv)
        return (None, None, None, None, *plan.split_grads(out))
