"""The step-fold form: a few kernel launches fold the maps of every adapted layer of a model into its weight.

Why: with the frozen model's GPU work split over ~2,000 small kernels, an eager SD 1.5 training step is bound by the
host issuing them, not by the GPU. Any per-layer adapter work costs launches (3 per layer for the fused activation
form: 128 layers -> ~400 launches + autograd nodes). Here a training step costs, for all layers together, a few
launches per padded block width (3 widths on SD 1.5 at n = 4: blocks of 80, 160/192 and 320 pad to 128, 256, 512):

    forward:  W'_l = H̃_l W_l H_l for every layer l into one flat buffer, then each layer runs the frozen model's
              own y = x W'_lᵀ + b
    backward: each layer's linear also returns dL/dW'_l (one GEMM, f x d x tokens, in the same autograd node)
              then passes over (dL/dW', W) and a finishing pass give every layer's dL/du (and dL/dv)

ETHER (one side, ``Plan`` here): one map pass forward, one pass + finish backward. ETHER+ (two sides,
``twosided.TwoSidedPlan``): a column-sum pass and a write pass forward, two passes + finishes backward, never
forming W H. The work is O(Σ f d) (~93M weights for SD 1.5's attention) per step, independent of batch and
resolution. W' is recomputed only when a parameter or weight changed (``_version``) or when a new forward reuses a
layer (a new autograd graph), so unmerged sampling folds once and then runs at the merged model's speed.

Tables: every kernel reads a work table of int64 rows (one per layer x block x chunk of rows); tensors are
addressed as ``base pointer + element offset``, so one launch reaches every layer's separate weight tensor. Tiles
are read along W's contiguous rows with alignment hints the host proves per launch (``ALIGN``). H200, SD 1.5,
bs 4, n = 4: the ether fold takes 0.13 ms and its backward pass 0.34 ms per step.
"""

from __future__ import annotations

import functools
import math

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


def _table(rows: list, width: int, device) -> torch.Tensor:
    return torch.tensor(np.asarray(rows, dtype=np.int64).reshape(-1, width), device=device)


def finish(part: torch.Tensor, pbase: torch.Tensor, grads: torch.Tensor, fin: torch.Tensor, bb: int,
           has_v: bool) -> None:
    """Sum each finish row's partial slots of ``part`` and pass them through û = u / ‖u‖ into ``grads``."""
    gfinish_kernel[(fin.shape[0],)](part, pbase, grads, fin, EPS, HAS_V=has_v, BB=bb,
                                    RB=max(1, min(64, 4096 // bb)), num_warps=4)


class Layout:
    """Where things are, for one set of layers (weights, parameters) at fixed addresses.

    ``shapes[l] = (f, d)``; ``prm[l]`` = (u_in, v_in, u_out, v_out) (None where absent). Flat buffers (W',
    dL/dW') hold layer l at ``woff[l]`` as (f, d) row-major. Weights and parameters are addressed as element
    offsets from ``wbase`` and ``pbase``; the gradient buffer groups parameters by shape.
    """

    def __init__(self, weights: list[torch.Tensor], prm: list[tuple]):
        self.device = weights[0].device
        self.shapes = [tuple(w.shape) for w in weights]
        sizes = [f * d for f, d in self.shapes]
        self.woff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.wbase = min(weights, key=lambda t: t.data_ptr())
        self.wo = [_offset(w, self.wbase) for w in weights]
        params = [p for ps in prm for p in ps if p is not None]
        self.pbase = min(params, key=lambda t: t.data_ptr())
        self.param_shapes = tuple(tuple(p.shape) for p in params)
        slots = grad_slots(self.param_shapes)
        self.grad_total = sum(math.prod(s) for s in self.param_shapes)
        flat_params = [(li, s) for li, ps in enumerate(prm) for s, p in enumerate(ps) if p is not None]
        self.gof = {key: slots[i] for i, key in enumerate(flat_params)}

    def po(self, p: torch.Tensor | None) -> int:
        return _offset(p, self.pbase) if p is not None else 0

    def split_grads(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """buf (grad_total,) -> per-parameter views, in the order of the flattened ``prm``."""
        return split_grads(buf, self.param_shapes)


def split_weights(flat: torch.Tensor, shapes: list[tuple]) -> list[torch.Tensor]:
    """flat (Σ f d,) -> one (f, d) view per layer, layers back to back (one ``split``: its backward is one cat)."""
    return [t.view(s) for t, s in zip(flat.split([f * d for f, d in shapes]), shapes)]


@functools.lru_cache(maxsize=16)
def _grad_groups(shapes: tuple) -> tuple:
    # ((shape, indices of the parameters of that shape), ...) in order of first appearance
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(i)
    return tuple((shape, tuple(idxs)) for shape, idxs in groups.items())


def grad_slots(shapes: list[tuple]) -> list[int]:
    """Where each parameter's gradient starts in the flat gradient buffer: parameters grouped by shape (in order of
    first appearance), so each group is one (count, *shape) block."""
    slots, pos = [0] * len(shapes), 0
    for shape, idxs in _grad_groups(tuple(shapes)):
        for i in idxs:
            slots[i] = pos
            pos += math.prod(shape)
    return slots


def split_grads(buf: torch.Tensor, shapes: list[tuple]) -> list[torch.Tensor]:
    """buf (Σ numel,) laid out by ``grad_slots`` -> one view per parameter, in the order of ``shapes`` (one
    ``unbind`` per group of a shape: this runs every backward, for up to 512 parameters)."""
    out: list = [None] * len(shapes)
    pos = 0
    for shape, idxs in _grad_groups(tuple(shapes)):
        size = math.prod(shape) * len(idxs)
        for i, g in zip(idxs, buf[pos:pos + size].view(len(idxs), *shape).unbind(0)):
            out[i] = g
        pos += size
    return out


# --------------------------------------------------------------------------- one side (ETHER)
class Launch:
    """One kernel launch of the one-sided map: the work items whose blocks pad to the same width ``BB``.

    Sizing per class (instead of one width for every layer) keeps lanes busy: with n = 4 on SD 1.5, blocks of 80,
    160, 192 and 320 pad to 128, 256, 256 and 512 rather than all to 512.
    """

    def __init__(self, rows: list, fin: list, bb: int, device):
        self.bb = bb
        self.unit = all(r[2] == 1 for r in rows)
        # offsets, leading dims, block start, block extent
        self.align = _pow2_dividing(r[c] for r in rows for c in (0, 1, 3, 4, 7, 8)) if self.unit else 1
        self.rt = _rows_per_item(bb)  # rows per work item, as Plan cut them
        self.bm = min(self.rt, max(1, 4096 // bb))
        # H200 sweep (SD 1.5, n = 4): 4 warps on 4096-element tiles ran the backward in 0.31 ms against 0.46 with 8
        self.warps = 4 if bb * self.bm <= 4096 else 8
        self.tab, self.fin, self.items = _table(rows, NCOL, device), _table(fin, 7, device), len(rows)


def _rows_per_item(bb: int) -> int:
    # about 16K elements of work per program (bounded to 8..256 rows)
    return int(min(256, max(8, 16384 // bb)))


class Plan(Layout):
    """ETHER: W' = W H, every layer's rows mapped block by block (H acts on W's rows: W H = (H Wᵀ)ᵀ)."""

    def __init__(self, weights: list[torch.Tensor], prm: list[tuple], n: int):
        super().__init__(weights, prm)
        classes: dict[int, tuple[list, list]] = {}  # padded block width -> (table rows, finish rows)
        for li, ((f, d), w, (u, *_)) in enumerate(zip(self.shapes, weights, prm)):
            b = d // n
            bb = triton.next_power_of_2(b)
            rows, fin = classes.setdefault(bb, ([], []))
            rt = _rows_per_item(bb)
            for j in range(n):
                k0 = len(rows)
                for r0 in range(0, f, rt):
                    rows.append([self.wo[li], w.stride(0), w.stride(1), int(self.woff[li]), d,
                                 self.po(u) + j * b, f, b, j * b, r0])
                fin.append([k0 * 2 * bb, len(rows) - k0, self.po(u) + j * b, 0, b, self.gof[(li, 0)] + j * b, 0])
        self.launches = [Launch(r, f, bb, self.device) for bb, (r, f) in sorted(classes.items())]

    def fold(self, dtype: torch.dtype, su: float, sv: float) -> tuple[torch.Tensor, tuple]:
        flat = torch.empty(self.total, device=self.device, dtype=dtype)
        for L in self.launches:
            gmap_kernel[(L.items,)](self.wbase, flat, self.pbase, L.tab, su, EPS, UNIT=L.unit, ALIGN=L.align,
                                    BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL, num_warps=L.warps)
        return flat, ()

    def backward(self, g: torch.Tensor, saved: tuple, su: float, sv: float) -> torch.Tensor:
        out = torch.empty(self.grad_total, device=self.device, dtype=torch.float32)
        for L in self.launches:
            part = torch.empty((L.items, 2, L.bb), device=self.device, dtype=torch.float32)
            gmap_backward_kernel[(L.items,)](g, self.wbase, part, self.pbase, L.tab, su, EPS, UNIT=L.unit,
                                             ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                                             num_warps=L.warps)
            finish(part, self.pbase, out, L.fin, L.bb, False)
        return out


def make_plan(weights: list[torch.Tensor], prm: list[tuple], n: int):
    """The plan for these layers: two-sided (ETHER+) when they carry output-side parameters, else one-sided."""
    if prm[0][2] is not None:
        from .twosided import TwoSidedPlan

        return TwoSidedPlan(weights, prm, n)
    return Plan(weights, prm, n)


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
