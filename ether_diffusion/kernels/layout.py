"""Where the step-fold plans find things: work tables, the flat layout of W' and of the parameter gradients, and
the finishing pass that turns partial sums into gradients of û. Shared by the one-sided (``one_sided``, ETHER) and
the two-sided (``two_sided``, ETHER+) plans."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .one_sided_kernels import finish_kernel
from .triton_reflect import EPS


# --------------------------------------------------------------------------- tables
def _offset(t: torch.Tensor, base: torch.Tensor) -> int:
    delta = t.data_ptr() - base.data_ptr()
    assert delta % t.element_size() == 0 and t.dtype == base.dtype
    return delta // t.element_size()


def pow2_dividing(values, cap: int = 8) -> int:
    """The largest power of two <= cap dividing every value (0 counts as divisible by anything)."""
    a = cap
    for v in values:
        while a > 1 and int(v) % a:
            a //= 2
    return a


def work_table(rows: list, width: int, device) -> torch.Tensor:
    """Rows of ``width`` int64 entries as one (len(rows), width) table on ``device``."""
    return torch.tensor(np.asarray(rows, dtype=np.int64).reshape(-1, width), device=device)


def finish(part: torch.Tensor, pbase: torch.Tensor, grads: torch.Tensor, fin: torch.Tensor, bb: int,
           has_v: bool) -> None:
    """Sum each finish row's partial slots of ``part`` and pass them through û = u / ‖u‖ into ``grads``."""
    finish_kernel[(fin.shape[0],)](part, pbase, grads, fin, EPS, HAS_V=has_v, BB=bb, RB=max(1, min(64, 4096 // bb)),
                                   num_warps=4)


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
