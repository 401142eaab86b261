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

from .grouped_kernels import NCOL, gfinish_kernel, gmap_backward_kernel, gmap_kernel
from .triton_reflect import EPS


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
        self.rt = _rows_per_item(bb)  # vectors per work item, as Plan cut the rows
        self.bm = self._bm(bb, trans, self.rt)
        elems = bb * self.bm
        self.warps = 4 if elems <= 2048 else (8 if elems <= 8192 else 16)
        as_t = lambda r, w: torch.tensor(np.asarray(r, dtype=np.int64).reshape(-1, w), device=device)  # noqa: E731
        self.tab = as_t(rows, NCOL)
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
                    rows.append(row_of(j) + [vectors, b, j * b, r0])
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
            gmap_kernel[(L.items,)](x, out, self.pbase, L.tab, su, sv, EPS, HAS_V=self.has_v, TRANS=L.trans,
                                     UNIT=L.unit, ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                                     num_warps=L.warps)

    def map_in(self, out: torch.Tensor, su, sv):
        self._map(self.in_launches, self.wbase, out, su, sv)

    def map_out(self, w1: torch.Tensor, out: torch.Tensor, su, sv):
        self._map(self.out_launches, w1, out, su, sv)

    def _backward(self, launches, g, x, dx, grads, su, sv):
        for L in launches:
            part = torch.empty((L.items, 2, L.bb), device=self.device, dtype=torch.float32)
            gmap_backward_kernel[(L.items,)](
                g, x, dx, part, self.pbase, L.tab, su, sv, EPS, HAS_V=self.has_v, WRITE_DX=dx is not None,
                TRANS=L.trans, UNIT=L.unit, ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                num_warps=L.warps)
            gfinish_kernel[(L.fin.shape[0],)](part, self.pbase, grads, L.fin, EPS, HAS_V=self.has_v, BB=L.bb,
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
