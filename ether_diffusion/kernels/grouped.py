"""The step-fold form: a few kernel launches fold the maps of every adapted layer of a model into its weight.

Why: with the frozen model's GPU work split over ~2,000 small kernels, an eager SD 1.5 training step is bound by the
host issuing them, not by the GPU. Any per-layer adapter work costs launches (3 per layer for the fused activation
form: 128 layers -> ~400 launches + autograd nodes). Here a training step costs, for all layers together, one launch
per padded block width (3 on SD 1.5 at n = 4: blocks of 80, 160/192 and 320 pad to 128, 256 and 512):

    forward:  W'_l = H̃_l W_l H_l for every layer l into one flat buffer (ether: input side; ether_plus: input side
              into float32 W1, then the output side), then each layer runs the frozen model's own y = x W'_lᵀ + b
    backward: each layer's linear also returns dL/dW'_l (one GEMM, f x d x tokens, in the same autograd node)
              then per width one pass over (dL/dW', W) and one finishing pass give every layer's dL/du, dL/dv

The work is O(Σ f d) (~93M weights for SD 1.5's attention) per step, independent of batch and resolution. W' is
recomputed only when a parameter or weight changed (``_version``) or when a new forward reuses a layer (a new
autograd graph), so unmerged sampling folds once and then runs at the merged model's speed.

Tables: every kernel reads a work table of int64 rows (one per layer x block x tile of vectors); tensors are
addressed as ``base pointer + element offset``, so one launch reaches every layer's separate weight tensor. Tiles
are read along the contiguous axis (rows of W; for the output side, rows of W1 across a block of its columns) with
alignment hints the host proves per launch (``ALIGN``). H200, SD 1.5, bs 4, n = 4: the ether fold takes 0.13 ms and
its backward pass 0.34 ms per step (0.76 and 0.81 ms with one launch padded to the widest block).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .triton_reflect import EPS

NCOL = 11  # int64 columns of a work table row: x_off x_ld x_st y_off y_ld u_off v_off M b c0 r0


@triton.jit
def _unit(PRM, off, ib, cm, eps):
    u = tl.load(PRM + off + ib, mask=cm, other=0.0).to(tl.float32)  # (BB,)
    return u / tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)


@triton.jit
def _item(TAB, k, NCOL: tl.constexpr, ALIGN: tl.constexpr):
    # one work-table row; offsets and leading dims carry the alignment the host proved for this launch
    row = TAB + k * NCOL
    x_off = tl.multiple_of(tl.load(row + 0), ALIGN)
    x_ld = tl.multiple_of(tl.load(row + 1), ALIGN)
    x_st = tl.load(row + 2)
    y_off = tl.multiple_of(tl.load(row + 3), ALIGN)
    y_ld = tl.multiple_of(tl.load(row + 4), ALIGN)
    u_off, v_off = tl.load(row + 5), tl.load(row + 6)
    M, b = tl.load(row + 7), tl.load(row + 8)
    c0, r0 = tl.multiple_of(tl.load(row + 9), ALIGN), tl.load(row + 10)
    return x_off, x_ld, x_st, y_off, y_ld, u_off, v_off, M, b, c0, r0


@triton.jit
def _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, TRANS: tl.constexpr, UNIT: tl.constexpr, ALIGN: tl.constexpr,
          BM: tl.constexpr):
    # element offsets of one tile in X's and in Y's layout, and its mask. Not TRANS: (BM vectors, BB elements),
    # elements contiguous in Y (and in X when UNIT). TRANS: (BB elements, BM vectors), vectors contiguous in both.
    # Masks on a contiguous axis are written in units of ALIGN so that loads and stores can be vectorised.
    vec = r0 + i + tl.arange(0, BM)
    if TRANS:
        m = (ib < b)[:, None] & ((vec // ALIGN) < (M // ALIGN))[None, :]
        ox = ib[:, None] * x_ld + vec[None, :]
        oy = ib[:, None] * y_ld + vec[None, :]
    else:
        m = (vec < M)[:, None] & ((ib // ALIGN) < (b // ALIGN))[None, :]
        oy = vec[:, None] * y_ld + ib[None, :]
        if UNIT:
            ox = vec[:, None] * x_ld + ib[None, :]
        else:
            ox = vec[:, None] * x_ld + ib[None, :] * x_st
    return ox, oy, m


@triton.jit
def _dot(x, w, TRANS: tl.constexpr):
    # x·w for every vector of the tile, broadcast back along its elements
    if TRANS:
        r = tl.sum(x * w, axis=0)[None, :]
    else:
        r = tl.sum(x * w, axis=1)[:, None]
    return r


@triton.jit
def _tile_zeros(TRANS: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr):
    if TRANS:
        z = tl.zeros((BB, BM), dtype=tl.float32)
    else:
        z = tl.zeros((BM, BB), dtype=tl.float32)
    return z


@triton.jit
def _sum_vectors(t, TRANS: tl.constexpr):
    # (tile) -> (BB,): summed over the tile's vectors
    if TRANS:
        r = tl.sum(t, axis=1)
    else:
        r = tl.sum(t, axis=0)
    return r


@triton.jit
def _start(x_off, y_off, x_ld, x_st, y_ld, c0, uh, vh, TRANS: tl.constexpr):
    # move the offsets to the block's first element; shape the unit vectors to broadcast along the tile
    if TRANS:
        x0 = x_off + c0 * x_ld
        y0 = y_off + c0 * y_ld
        u2 = uh[:, None]
        v2 = vh[:, None]
    else:
        x0 = x_off + c0 * x_st
        y0 = y_off + c0
        u2 = uh[None, :]
        v2 = vh[None, :]
    return x0, y0, u2, v2


@triton.jit
def _gmap_kernel(X, Y, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, TRANS: tl.constexpr, UNIT: tl.constexpr,
                 ALIGN: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # y = x + su (x·û) û + sv (x·v̂) v̂ on vectors r0..r0+RT of one block of one layer
    x_off, x_ld, x_st, y_off, y_ld, u_off, v_off, M, b, c0, r0 = _item(TAB, tl.program_id(0), NCOL, ALIGN)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh = _unit(PRM, u_off, ib, cm, eps)
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)
    x_off, y_off, uh, vh = _start(x_off, y_off, x_ld, x_st, y_ld, c0, uh, vh, TRANS)
    for i in range(0, RT, BM):
        ox, oy, m = _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, TRANS, UNIT, ALIGN, BM)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        y = x + su * _dot(x, uh, TRANS) * uh
        if HAS_V:
            y += sv * _dot(x, vh, TRANS) * vh
        tl.store(Y + y_off + oy, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _gmap_backward_kernel(G, X, DX, P, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, WRITE_DX: tl.constexpr,
                          TRANS: tl.constexpr, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr,
                          BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # g (and dx) in the table's y layout, x in its x layout; P[item] = (su Σ[(x·û)g + (g·û)x], same for v)
    k = tl.program_id(0)
    x_off, x_ld, x_st, g_off, g_ld, u_off, v_off, M, b, c0, r0 = _item(TAB, k, NCOL, ALIGN)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh = _unit(PRM, u_off, ib, cm, eps)
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)
    x_off, g_off, uh, vh = _start(x_off, g_off, x_ld, x_st, g_ld, c0, uh, vh, TRANS)
    # per-lane accumulators, summed over the vectors once at the end (measured faster than a sum per tile)
    acc_u = _tile_zeros(TRANS, BM, BB)
    acc_v = _tile_zeros(TRANS, BM, BB)
    for i in range(0, RT, BM):
        ox, og, m = _tile(r0, i, ib, M, b, x_ld, x_st, g_ld, TRANS, UNIT, ALIGN, BM)
        g = tl.load(G + g_off + og, mask=m, other=0.0).to(tl.float32)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        gu = _dot(g, uh, TRANS)
        acc_u += _dot(x, uh, TRANS) * g + gu * x
        dx = g + su * gu * uh
        if HAS_V:
            gv = _dot(g, vh, TRANS)
            acc_v += _dot(x, vh, TRANS) * g + gv * x
            dx += sv * gv * vh
        if WRITE_DX:
            tl.store(DX + g_off + og, dx.to(DX.dtype.element_ty), mask=m)
    tl.store(P + k * 2 * BB + ib, su * _sum_vectors(acc_u, TRANS), mask=cm)
    if HAS_V:
        tl.store(P + k * 2 * BB + BB + ib, sv * _sum_vectors(acc_v, TRANS), mask=cm)


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


def _pow2_dividing(values, cap: int = 8) -> int:
    """The largest power of two <= cap dividing every value (0 counts as divisible by anything)."""
    a = cap
    for v in values:
        while a > 1 and int(v) % a:
            a //= 2
    return a


class Launch:
    """One kernel launch of a map: the work items whose blocks pad to the same width ``BB``, with its tile shape.

    Sizing per class (instead of one width for every layer) keeps lanes busy: with n = 4 on SD 1.5, blocks of 80,
    160, 192 and 320 pad to 128, 256, 256 and 512 rather than all to 512.
    """

    def __init__(self, rows: list, fin: list, bb: int, trans: bool, device):
        self.bb, self.trans = bb, trans
        self.unit = trans or all(r[2] == 1 for r in rows)
        cols = [0, 1, 3, 4, 9] + ([7] if trans else [8])  # offsets, leading dims, block start, contiguous extent
        self.align = _pow2_dividing(r[c] for r in rows for c in cols) if self.unit else 1
        self.rt = rows[0][11]
        self.bm = self._bm(bb, trans, self.rt)
        elems = bb * self.bm
        self.warps = 4 if elems <= 2048 else (8 if elems <= 8192 else 16)
        as_t = lambda r, w: torch.tensor(np.asarray(r, dtype=np.int64).reshape(-1, w), device=device)  # noqa: E731
        self.tab = as_t([r[:NCOL] for r in rows], NCOL)
        self.fin = as_t(fin, 7)
        self.items = len(rows)

    @staticmethod
    def _bm(bb: int, trans: bool, rt: int) -> int:
        if trans:  # vectors run along the contiguous axis: keep at least 16 of them per load
            return min(rt, max(16, 8192 // bb))
        return min(rt, max(1, 4096 // bb))


def _rows_per_item(bb: int) -> int:
    # about 16K elements of work per program (bounded to 8..256 vectors)
    return int(min(256, max(8, 16384 // bb)))


class Plan:
    """Work tables and launch shapes for one set of layers (weights, parameters) at fixed addresses.

    ``shapes[l] = (f, d)``; ``prm[l]`` = (u_in, v_in, u_out, v_out) (None where absent); ``n`` blocks per side.
    Flat buffers (W1, W', dL/dW') hold layer l at ``woff[l]`` as (f, d) row-major. The input side maps rows of
    W (blocks of its d columns); the output side maps columns of W1 (blocks of its f rows), reading them
    as (block, columns) tiles so that loads run along W1's contiguous rows.
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

        # per side, per padded block width: (table rows, finish rows); a finish row's k0 indexes its class's rows
        sides: dict[bool, dict[int, tuple[list, list]]] = {False: {}, True: {}}

        def add(trans, b, vectors, row_of, u, v, gu, gv):
            bb = triton.next_power_of_2(b)
            rows, fin = sides[trans].setdefault(bb, ([], []))
            rt = _rows_per_item(bb)
            for j in range(n):
                k0 = len(rows)
                for r0 in range(0, vectors, rt):
                    rows.append(row_of(j) + [vectors, b, j * b, r0, rt])
                fin.append([k0, len(rows) - k0, u + j * b, v + j * b if self.has_v else 0, b,
                             gu + j * b, gv + j * b if self.has_v else 0])

        for li, ((f, d), w, (u, v, uo, vo)) in enumerate(zip(self.shapes, weights, prm)):
            wo, fo = _offset(w, self.wbase), int(self.woff[li])
            b = d // n
            # input side: rows of W (f vectors), block j of the d columns; W may have any strides
            add(False, b, f, lambda j, b=b, u=u, v=v: [wo, w.stride(0), w.stride(1), fo, d, po(u) + j * b,
                                                       po(v) + j * b if v is not None else 0],
                po(u), po(v) if v is not None else 0, gof[(li, 0)], gof[(li, 1)] if v is not None else 0)
            if uo is None:
                continue
            bo = f // n
            # output side: columns of W1 (d vectors), block j of the f rows; W1 is our own (f, d) row-major buffer
            add(True, bo, d, lambda j, bo=bo, uo=uo, vo=vo: [fo, d, 1, fo, d, po(uo) + j * bo, po(vo) + j * bo],
                po(uo), po(vo), gof[(li, 2)], gof[(li, 3)])
        dev = self.device
        self.in_launches = [Launch(r, f, bb, False, dev) for bb, (r, f) in sorted(sides[False].items())]
        self.out_launches = [Launch(r, f, bb, True, dev) for bb, (r, f) in sorted(sides[True].items())]
        self.has_out = bool(self.out_launches)

    # ------------------------------------------------------------------ launches
    def _map(self, launches, x, out, su, sv):
        for L in launches:
            _gmap_kernel[(L.items,)](x, out, self.pbase, L.tab, su, sv, EPS, HAS_V=self.has_v, TRANS=L.trans,
                                     UNIT=L.unit, ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                                     num_warps=L.warps)

    def map_in(self, out: torch.Tensor, su, sv):
        self._map(self.in_launches, self.wbase, out, su, sv)

    def map_out(self, w1: torch.Tensor, out: torch.Tensor, su, sv):
        self._map(self.out_launches, w1, out, su, sv)

    def _backward(self, launches, g, x, dx, grads, su, sv):
        for L in launches:
            part = torch.empty((L.items, 2, L.bb), device=self.device, dtype=torch.float32)
            _gmap_backward_kernel[(L.items,)](
                g, x, dx, part, self.pbase, L.tab, su, sv, EPS, HAS_V=self.has_v, WRITE_DX=dx is not None,
                TRANS=L.trans, UNIT=L.unit, ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                num_warps=L.warps)
            _gfinish_kernel[(L.fin.shape[0],)](part, self.pbase, grads, L.fin, EPS, HAS_V=self.has_v, BB=L.bb,
                                               RB=max(1, min(64, 4096 // L.bb)), num_warps=4)

    def backward_in(self, g: torch.Tensor, grads: torch.Tensor, su, sv):
        self._backward(self.in_launches, g, self.wbase, None, grads, su, sv)

    def backward_out(self, g: torch.Tensor, w1: torch.Tensor, dw1: torch.Tensor, grads: torch.Tensor, su, sv):
        self._backward(self.out_launches, g, w1, dw1, grads, su, sv)

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
        if not plan.has_out:
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
        if plan.has_out:
            w1 = torch.empty(plan.total, device=plan.device, dtype=torch.float32)
            plan.map_in(w1, su, sv)  # recompute W1 = W H
            dw1 = torch.empty_like(w1)
            plan.backward_out(g, w1, dw1, out, su, sv)  # dL/dW1 = H̃ dL/dW', and the output side's grads
            g = dw1
        plan.backward_in(g, out, su, sv)
        return (None, None, None, None, *plan.split_grads(out))
