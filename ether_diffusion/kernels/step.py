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
flow through the forward's own fold.
"""

from __future__ import annotations

import copy

import torch


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

    def __deepcopy__(self, memo):
        # cached W' are non-leaf tensors (not deep-copyable); a copy starts cold
        return StepFold(copy.deepcopy(self.layers, memo), self.method, self.n)

    def _params(self, i: int) -> tuple:
        proc, p, _ = self.layers[i]
        p_in, p_out = proc.adapter(p).params()
        return _flat(p_in, p_out)

    def _fold(self, dtype: torch.dtype) -> None:
        from .grouped import StepFoldFn, make_plan

        weights = [lin.weight for _, _, lin in self.layers]
        prm = [self._params(i) for i in range(len(self.layers))]
        key = tuple(w.data_ptr() for w in weights) + tuple(p.data_ptr() for ps in prm for p in ps if p is not None)
        if key != self.plan_key:
            self.plan, self.plan_key = make_plan(weights, prm, self.n), key
        flat = [p for ps in prm for p in ps if p is not None]
        self.weights = None  # free the previous W' before allocating the next
        self.weights = StepFoldFn.apply(self.plan, dtype, self.su, self.sv, *flat)
        self.meta = [tuple((t, t._version, t.data_ptr()) for t in ps if t is not None)
                     + ((w, w._version, w.data_ptr()),) for ps, w in zip(prm, weights)]
        self.grad, self.dtype = torch.is_grad_enabled(), dtype
        self.handed = set()

    def weight(self, proc, projection: str, p_in: dict, p_out: dict | None, weight: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
        """The folded (f, d) weight of one layer for this call, in ``dtype``."""
        i = self.index[(id(proc), projection)]
        grad = torch.is_grad_enabled()
        if (self.weights is None or dtype != self.dtype or (grad and (not self.grad or i in self.handed))
                or not _unchanged(self.meta[i], (*_flat(p_in, p_out), weight))):
            self._fold(dtype)
        if grad:
            self.handed.add(i)
        w = self.weights[i]
        return w if grad else w.detach()


def _unchanged(meta: tuple, tensors: tuple) -> bool:
    # the non-None ``tensors`` are the very tensors of ``meta`` [(tensor, _version, data_ptr)], unmodified
    # (a plain loop: this runs for every projection call)
    k = 0
    for t in tensors:
        if t is None:
            continue
        c, ver, ptr = meta[k]
        if t is not c or t._version != ver or t.data_ptr() != ptr:
            return False
        k += 1
    return True


def _flat(p_in: dict, p_out: dict | None) -> tuple:
    # (u_in, v_in, u_out, v_out), None where absent
    if p_out is None:
        return p_in["u"], p_in.get("v"), None, None
    return p_in["u"], p_in.get("v"), p_out["u"], p_out.get("v")
