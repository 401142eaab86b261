"""The step fold: every adapted layer of a model folded at once, W'_l = H̃_l W_l H_l, once per forward of the model.
This module is its bookkeeping: which layers, when to refold, what each layer gets (the fold itself:
``step_fold_ops``, on the plans of ``one_sided`` and ``two_sided``).

A model prepared by ``apply_ether`` carries one ``StepFold`` shared by its processors (``state.step_fold``). Each
adapted projection asks it for its folded weight W' and runs ``F.linear(x, W', b)``. All layers are refolded at once,
in one pass (a launch per block width), when

- a forward of the model begins (its forward pre-hook counts forwards: ``hooks.on_forward``): a value written
  behind autograd's back between two forwards (``param.data.copy_``, as diffusers' ``EMAModel.copy_to`` does)
  changes no ``_version``, so no W' outlives the forward that folded it,
- a layer asks twice with gradients on (gradient checkpointing's recompute),
- any parameter or frozen weight changed in place within the forward (``_version``), or was replaced (another active
  adapter), or the compute dtype changed,
- gradients are on and the cached W' were folded without them.

A sampling step without gradients folds once and runs every projection at the merged model's speed.

Gradient checkpointing recomputes a layer inside the backward: that refolds once (same values); the gradients still
flow through the forward's own fold. A call made while some layer does not hold its whole weight or parameters (a
sharding wrapper such as FSDP swaps in partial views between its units' forwards) is not folded: that projection
takes its per-layer form instead.

Projections that share their input (q, k, v of self-attention; k, v of cross-attention: ``SHARED``) and sit side by
side in the flat buffer form one *segment*: their W' rows are adjacent, so ``linear_many`` runs them as one GEMM on
a (Σ f, d) view, as diffusers' ``fuse_qkv_projections`` does for the frozen model (one GEMM forward, one for dx and
one for dL/dW' backward, where three projections take three of each).

Under ``torch.compile`` (the model compiled whole) the same fold runs as one custom op
(``step_fold_ops.compiled_step_fold``) at the forward's first adapted projection, and the W' are dropped once every
layer has taken its own: the compiled graph holds one fold and one fold backward for the whole model, the compiler
owns every layer's GEMMs, and nothing outlives the forward for the compiler to guard on or return (the model's
forward hooks call ``drop_traced``, clearing what a partial forward would leave).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .device import SIGNS, autocast_dtype, is_compiling, on_device


SHARED = ("to_q", "to_k", "to_v")  # projections that may share an input (and so a segment)


def segments(layers: list, cross: frozenset = frozenset()) -> list[range]:
    """Runs of adjacent layers of one processor, projections in ``SHARED`` order with one input width and no bias
    (in a cross-attention processor, ``id(proc) in cross``, the query takes the hidden states alone):
    [range of layer indices] covering every layer once (a layer alone where it fits no run)."""

    def shares(proc, p, lin) -> bool:
        return p in SHARED and lin.bias is None and not (id(proc) in cross and p == "to_q")

    out: list[range] = []
    for i, (proc, p, lin) in enumerate(layers):
        if i and shares(proc, p, lin):
            prev_proc, prev_p, prev_lin = layers[i - 1]
            if (prev_proc is proc and shares(prev_proc, prev_p, prev_lin)
                    and SHARED.index(prev_p) < SHARED.index(p) and prev_lin.in_features == lin.in_features):
                out[-1] = range(out[-1].start, i + 1)
                continue
        out.append(range(i, i + 1))
    return out


def _layout(layers: list, cross: frozenset) -> tuple[list, list, list]:
    # (segments, where: layer -> (its segment, first row, end row in the segment's (Σ f, d) view), (Σ f, d) per
    # segment)
    segs, where = segments(layers, cross), []
    for k, seg in enumerate(segs):
        r = 0
        for i in seg:
            f = layers[i][0].shapes[layers[i][1]][0]
            where.append((k, r, r + f))
            r += f
    shapes = [(where[seg[-1]][2], layers[seg[0]][0].shapes[layers[seg[0]][1]][1]) for seg in segs]
    return segs, where, shapes


class StepFold:
    """Every adapted layer of one model: ``layers`` = [(processor, projection name, nn.Linear)]; ``cross``: ids of
    the cross-attention processors."""

    def __init__(self, layers: list, method: str, n: int, cross: frozenset = frozenset(), forwards=None,
                 layout: tuple = None):
        self.layers = layers
        self.forwards = forwards  # the model's forward counter (``state.ForwardCounter``): a fold serves one forward
        self.index = {(id(proc), p): i for i, (proc, p, _) in enumerate(layers)}
        self.cross = cross
        self.segments, self.where, self.seg_shapes = layout or _layout(layers, cross)
        self.method, self.n = method, n
        self.su, self.sv = SIGNS[method]
        self.weights = self.meta = self.dtype = None
        self.grad = False
        self.handed: set[int] = set()
        self.traced: list | None = None  # the W' of the forward being compiled (``trace_fold``), else None
        self.left = 0  # its layers not yet served

    def __deepcopy__(self, memo):
        # cached W' are non-leaf tensors (not deep-copyable); a copy starts cold. In memo first: the layers' own
        # processors point back here
        new = memo[id(self)] = StepFold.__new__(StepFold)
        layers = copy.deepcopy(self.layers, memo)
        cross = frozenset(id(new_proc) for (proc, _, _), (new_proc, _, _) in zip(self.layers, layers)
                          if id(proc) in self.cross)
        # the layout as it is: the copied processors are not filled in yet
        forwards = copy.deepcopy(self.forwards, memo)  # the copied model's own counter
        new.__init__(layers, self.method, self.n, cross, forwards, (self.segments, self.where, self.seg_shapes))
        return new

    def _whole(self, adapters: list) -> bool:
        # every layer holds its whole (f, d) weight and full-size parameters (stops at the first that does not)
        for (proc, p, lin), adapter in zip(self.layers, adapters):
            f, d = proc.shapes[p]
            if tuple(lin.weight.shape) != (f, d) or any(t.numel() != d for t in adapter.side("in").values()):
                return False
            if any(t.numel() != f for t in adapter.side("out").values()):
                return False
        return True

    def fold(self, dtype: torch.dtype) -> bool:
        """Fold every layer now, with gradients where they are on (False, folding nothing, while some layer is not
        whole)."""
        from .step_fold_ops import eager_step_fold

        self.weights = None  # free the previous W' before allocating the next
        adapters = [proc.adapter(p) for proc, p, _ in self.layers]
        if not self._whole(adapters):
            return False
        weights = [lin.weight for _, _, lin in self.layers]
        params = _flat_params(adapters)
        self.weights = eager_step_fold(weights, params, self.n, self.su, self.sv, dtype, self.seg_shapes)  # per segment
        self.meta = [tuple((t, t._version, t.data_ptr()) for t in (*_tensors(a), w)) for a, w in zip(adapters, weights)]
        self.grad, self.dtype = torch.is_grad_enabled(), dtype
        self.forward = self.forwards.count if self.forwards is not None else None
        self.handed = set()
        return True

    def _new_forward(self) -> bool:
        # a forward of the model began since the last fold: values written behind autograd's back
        # (``param.data.copy_``: diffusers' EMAModel.copy_to) change no version, so no fold outlives its forward
        return self.forwards is not None and self.forward != self.forwards.count

    def trace_fold(self) -> bool:
        """Under torch.compile, at the first adapted projection of a forward: every layer's W' through one custom
        op into ``traced`` (False where the step form does not apply: the layers take their per-layer form)."""
        weights = [lin.weight for _, _, lin in self.layers]
        adapters = [proc.adapter(p) for proc, p, _ in self.layers]
        if not on_device(weights[0]) or not self._whole(adapters) or any(
                lin.weight.requires_grad or (lin.bias is not None and lin.bias.requires_grad)
                for _, _, lin in self.layers):
            return False
        from .step_fold_ops import compiled_step_fold

        self.traced = compiled_step_fold(weights, _flat_params(adapters), self.n, self.su, self.sv,
                                         autocast_dtype(weights[0]), self.seg_shapes)
        self.left = len(self.layers)
        return True

    def linear(self, proc, projection: str, linear, x: torch.Tensor) -> torch.Tensor | None:
        """``linear(x)`` with this layer's folded weight H̃ W H, or None where the step form does not apply (CPU
        tensors without triton's interpreter, a trainable base weight or bias, a layer not whole, a module other
        than the one folded: the caller checks that ``linear`` is bare, ``projection.is_plain``)."""
        i = self.index.get((id(proc), projection))
        if i is None or self.layers[i][2] is not linear:
            return None
        w, b = linear.weight, linear.bias
        if not is_compiling() and (w.requires_grad or (b is not None and b.requires_grad) or not on_device(x)):
            return None
        folded = self._take([i], x)
        return None if folded is None else F.linear(x, folded, b)

    def linear_many(self, proc, projections: tuple[str, ...], modules: list, x: torch.Tensor
                    ) -> list[torch.Tensor] | None:
        """[linear_p(x) for p in projections] as one GEMM where they are one whole segment (``segments``) of
        frozen, bias-free layers, ``modules`` (the projections' modules now, which the caller checks are bare,
        ``projection.is_plain``) the very ones folded; else None (the caller takes them one by one)."""
        idx = [self.index.get((id(proc), p)) for p in projections]
        if (None in idx or len(idx) < 2
                or idx != list(self.segments[self.where[idx[0]][0]])
                or any(m is not self.layers[i][2] for i, m in zip(idx, modules))):
            return None
        if not is_compiling():
            lins = [self.layers[i][2] for i in idx]
            if not on_device(x) or any(lin.weight.requires_grad or lin.bias is not None for lin in lins):
                return None
        folded = self._take(idx, x)  # (Σ f, d)
        if folded is None:
            return None
        return list(F.linear(x, folded).split([self.where[i][2] - self.where[i][1] for i in idx], dim=-1))

    def _take(self, idx: list[int], x: torch.Tensor) -> torch.Tensor | None:
        # the folded weight of layers idx (adjacent, in one segment): a segment's view or rows of it
        if is_compiling():
            if self.traced is None and not self.trace_fold():
                return None
            seg = self.traced[self.where[idx[0]][0]]
            self.left -= len(idx)
            if self.left <= 0:  # every layer served: nothing left for the compiler to carry out of the graph
                self.traced = None
        else:
            seg = self.segment(idx, autocast_dtype(x, self.layers[idx[0]][2].weight.dtype))
            if seg is None:
                return None
        r0, r1 = self.where[idx[0]][1], self.where[idx[-1]][2]
        return seg if (r0, r1) == (0, seg.shape[0]) else seg[r0:r1]

    def segment(self, idx: list[int], dtype: torch.dtype) -> torch.Tensor | None:
        """The folded (Σ f, d) weight of the segment holding layers ``idx`` in ``dtype`` (fresh where any of them
        changed or, with gradients, was already handed out in this forward), or None while some layer is not
        whole."""
        grad = torch.is_grad_enabled()
        stale = (self.weights is None or dtype != self.dtype or self._new_forward()
                 or (grad and (not self.grad or not self.handed.isdisjoint(idx))))
        if not stale:
            for i in idx:
                proc, p, lin = self.layers[i]
                if not _unchanged(self.meta[i], proc.adapter(p), lin.weight):
                    stale = True
                    break
        if stale and not self.fold(dtype):
            return None
        w = self.weights[self.where[idx[0]][0]]
        if grad:
            self.handed.update(idx)
            return w
        return w.detach() if self.grad else w  # folded without gradients: no graph to cut

    def drop_traced(self) -> None:
        """At the start and end of every forward (the model's hooks): a compiled forward's W' never outlive it, nor
        reach the next forward (a forward whose layers were not all called would otherwise leave them)."""
        self.traced = None


def _tensors(adapter) -> tuple:
    # the adapter's parameters in a fixed order: input side, then output side (their registration order)
    return tuple(adapter._parameters.values())


def _same(meta: tuple, k: int, t: torch.Tensor) -> bool:
    c, ver, ptr = meta[k]
    return t is c and t._version == ver and t.data_ptr() == ptr


def _unchanged(meta: tuple, adapter, weight: torch.Tensor) -> bool:
    # the adapter's parameters and the weight are the very tensors of ``meta`` [(tensor, _version, data_ptr)],
    # unmodified (plain loops: this runs for every projection call)
    k, last = 0, len(meta) - 1
    for t in adapter._parameters.values():
        if k == last or not _same(meta, k, t):
            return False
        k += 1
    return k == last and _same(meta, k, weight)


def _flat_params(adapters: list) -> list[torch.Tensor]:
    # per layer u_in, v_in, u_out, v_out, the absent ones left out (all layers alike)
    out = []
    for adapter in adapters:
        p_in, p_out = adapter.params()
        out += [p_in["u"], p_in.get("v")] + ([p_out["u"], p_out.get("v")] if p_out is not None else [])
    return [p for p in out if p is not None]
