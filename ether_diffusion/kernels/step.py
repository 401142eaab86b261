"""Bookkeeping of the step-fold form (launches in ``grouped`` and ``twosided``): which layers, when
to refold, what each layer gets.

A model prepared by ``apply_ether`` carries one ``StepFold`` shared by its processors (``kernels.attach``). Each
adapted projection asks it for its folded weight W' and runs ``F.linear(x, W', b)``. All layers are refolded at once,
in one pass (a launch per block width), when

- a new forward starts with gradients on (a layer asks twice: the previous W' belong to a used autograd graph),
- any parameter or frozen weight changed in place (optimiser step, load, merge / unmerge: ``_version``), or was
  replaced (another active adapter), or the compute dtype changed,
- gradients are on and the cached W' were folded without them.

Without gradients W' stays valid across calls: unmerged sampling folds once, then runs at the merged model's speed.
Gradient checkpointing recomputes a layer inside the backward: that refolds once (same values); the gradients still
flow through the forward's own fold. A call made while some layer does not hold its whole weight or parameters (a
sharding wrapper such as FSDP swaps in partial views between its units' forwards) is not folded: that projection
takes the per-layer form instead.

Under ``torch.compile`` (the model compiled whole) the same fold runs as one custom op (``ops.step_fold``) at the
forward's first adapted projection, and the W' are dropped once every layer has taken its own: the compiled graph
holds one fold and one fold backward for the whole model, the compiler owns every layer's GEMMs, and nothing outlives
the forward for the compiler to guard on or return (forward hooks clear what a partial forward would leave).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from . import _compiling, _on_device, autocast_dtype


class StepFold:
    """Every adapted layer of one model: ``layers`` = [(processor, projection name, nn.Linear)]."""

    def __init__(self, layers: list, method: str, n: int):
        self.layers = layers
        self.index = {(id(proc), p): i for i, (proc, p, _) in enumerate(layers)}
        self.method, self.n = method, n
        self.su, self.sv = (-2.0, 0.0) if method == "ether" else (-1.0, 1.0)
        self.plan = self.plan_key = None
        self.weights = self.meta = self.dtype = None
        self.grad = False
        self.handed: set[int] = set()
        self.traced: list | None = None  # the W' of the forward being compiled (``trace_fold``), else None
        self.left = 0  # its layers not yet served

    def __deepcopy__(self, memo):
        # cached W' are non-leaf tensors (not deep-copyable); a copy starts cold. In memo first: the layers' own
        # processors point back here
        new = memo[id(self)] = StepFold.__new__(StepFold)
        new.__init__(copy.deepcopy(self.layers, memo), self.method, self.n)
        return new

    def _whole(self, adapters: list) -> bool:
        # every layer holds its whole (f, d) weight and full-size parameters (stops at the first that does not)
        for (proc, p, lin), adapter in zip(self.layers, adapters):
            f, d = proc.shapes[p]
            if tuple(lin.weight.shape) != (f, d) or any(t.numel() != d for t in adapter.p_in._parameters.values()):
                return False
            if adapter.p_out is not None and any(t.numel() != f for t in adapter.p_out._parameters.values()):
                return False
        return True

    def _fold(self, dtype: torch.dtype) -> bool:
        from .grouped import StepFoldFn, make_plan

        self.weights = None  # free the previous W' before allocating the next
        adapters = [proc.adapter(p) for proc, p, _ in self.layers]
        if not self._whole(adapters):
            return False
        weights = [lin.weight for _, _, lin in self.layers]
        prm = [_flat(*a.params()) for a in adapters]
        key = tuple(w.data_ptr() for w in weights) + tuple(p.data_ptr() for ps in prm for p in ps if p is not None)
        if key != self.plan_key:
            self.plan, self.plan_key = make_plan(weights, prm, self.n), key
        flat = [p for ps in prm for p in ps if p is not None]
        self.weights = StepFoldFn.apply(self.plan, dtype, self.su, self.sv, *flat)
        self.meta = [tuple((t, t._version, t.data_ptr()) for t in (*_tensors(a), w)) for a, w in zip(adapters, weights)]
        self.grad, self.dtype = torch.is_grad_enabled(), dtype
        self.handed = set()
        return True

    def trace_fold(self) -> bool:
        """Under torch.compile, at the first adapted projection of a forward: every layer's W' through one custom
        op into ``traced`` (False where the step form does not apply: the layers take their per-layer form)."""
        weights = [lin.weight for _, _, lin in self.layers]
        adapters = [proc.adapter(p) for proc, p, _ in self.layers]
        if not _on_device(weights[0]) or not self._whole(adapters) or any(
                lin.weight.requires_grad or (lin.bias is not None and lin.bias.requires_grad)
                for _, _, lin in self.layers):
            return False
        from .ops import step_fold

        self.traced = step_fold(weights, [_flat(*a.params()) for a in adapters], self.n, self.su, self.sv,
                                autocast_dtype(weights[0]))
        self.left = len(self.layers)
        return True

    def linear(self, proc, projection: str, adapter, linear, x: torch.Tensor) -> torch.Tensor | None:
        """``linear(x)`` with this layer's folded weight H̃ W H, or None where the step form does not apply (CPU
        tensors without triton's interpreter, a trainable base weight or bias, a layer not whole)."""
        w, b = linear.weight, linear.bias
        if _compiling():
            if self.traced is None and not self.trace_fold():
                return None
            folded = self.traced[proc._step_slots[projection]]
            self.left -= 1
            if self.left == 0:  # every layer served: nothing left for the compiler to carry out of the graph
                self.traced = None
            return F.linear(x, folded, b)
        if w.requires_grad or (b is not None and b.requires_grad) or not _on_device(x):
            return None
        folded = self.weight(proc, projection, adapter, w, autocast_dtype(x, w.dtype))
        return None if folded is None else F.linear(x, folded, b)

    def weight(self, proc, projection: str, adapter, weight: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor | None:
        """The folded (f, d) weight of one layer (its ``ProjectionAdapter`` and frozen weight) in ``dtype``, or None
        while some layer is not whole."""
        i = self.index[(id(proc), projection)]
        grad = torch.is_grad_enabled()
        if (self.weights is None or dtype != self.dtype or (grad and (not self.grad or i in self.handed))
                or not _unchanged(self.meta[i], adapter, weight)):
            if not self._fold(dtype):
                return None
        w = self.weights[i]
        if grad:
            self.handed.add(i)
            return w
        return w.detach() if self.grad else w  # folded without gradients: no graph to cut


def clear(model, *args) -> None:
    """Forward pre-hook and hook (``kernels.attach``): a compiled forward's W' never outlive it, nor reach the next
    forward (a forward whose layers were not all called would otherwise leave them)."""
    model._ether_step_fold.traced = None


def _tensors(adapter) -> tuple:
    # the adapter's parameters in a fixed order: input side, then output side
    out = adapter.p_out
    return (*adapter.p_in._parameters.values(), *(out._parameters.values() if out is not None else ()))


def _same(meta: tuple, k: int, t: torch.Tensor) -> bool:
    c, ver, ptr = meta[k]
    return t is c and t._version == ver and t.data_ptr() == ptr


def _unchanged(meta: tuple, adapter, weight: torch.Tensor) -> bool:
    # the adapter's parameters and the weight are the very tensors of ``meta`` [(tensor, _version, data_ptr)],
    # unmodified (plain loops: this runs for every projection call)
    k, last = 0, len(meta) - 1
    for side in (adapter.p_in, adapter.p_out):
        if side is None:
            continue
        for t in side._parameters.values():
            if k == last or not _same(meta, k, t):
                return False
            k += 1
    return k == last and _same(meta, k, weight)


def _flat(p_in: dict, p_out: dict | None) -> tuple:
    # (u_in, v_in, u_out, v_out), None where absent
    if p_out is None:
        return p_in["u"], p_in.get("v"), None, None
    return p_in["u"], p_in.get("v"), p_out["u"], p_out.get("v")
