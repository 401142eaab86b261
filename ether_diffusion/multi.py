"""Many adapters in one model: named adapters, and a different adapter for each sample of a batch.

A reflection is a few numbers per layer, so one UNet can hold hundreds of subjects and apply a different one to each
sample: the transforms act per sample on the activations while the (shared, frozen) projection weights are used once
for the whole batch: no weight copies, no merging.

    load_ether(pipe.unet, "dog_adapter", adapter_name="dog")
    load_ether(pipe.unet, "cat_adapter", adapter_name="cat")
    pipe(["a sks dog", "a sks cat", "a dog"], cross_attention_kwargs={"ether_adapters": ["dog", "cat", "none"]})

``ether_adapters`` holds one name per sample of the UNet batch, or one per image of the conditional half: with
classifier-free guidance the pipeline runs [unconditional, conditional] halves and the list is tiled, so each sample's
unconditional pass uses that sample's adapter. ``"none"`` (or None) runs the base model for that sample.

Two forms compute a mixed batch (``EtherAttnProcessor.mixed_form``):

- ``"fold"`` (default at inference, i.e. without gradients): each sample's adapter is folded into its own copy of
  the weight once, ``W_i = H̃_i W H_i`` (the base ``W`` for "none"), and each projection is one batched matmul
  ``y_i = W_i x_i + b``. The folded stack (B, f, d) is kept while the names, the parameters and the weights stay
  the same, so a sampling loop folds once: per step this costs one ``bmm`` where a single adapter costs one
  ``linear``. Memory: one weight copy per sample of the UNet batch for each adapted projection (SD 1.5, bf16, the
  four attention projections: ~190 MB per sample, so ~3 GB for 8 prompts with classifier-free guidance).
- ``"act"`` (always with gradients): the maps act per sample on the activations and the shared weight is used once
  for the whole batch: no weight copies, several small kernels per projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import functional as Fn
from .kernels import autocast_dtype

NONE = "none"
MIXED_FORMS = ("fold", "act")


# ------------------------------------------------------------------ per-sample math
def transform_per_sample(x: torch.Tensor, method: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """x (B, N, dim), params stacked per sample (B, ...) -> (B, N, dim): sample i uses params[:][i].

    Same math as ``functional.transform`` with an extra leading batch dimension on the parameters.
    """
    if method == "ether":  # (B, n, b) -> (B, 1, n, b): broadcast over the tokens of each sample
        return Fn.householder(x, params["u"][:, None])
    if method == "ether_plus":
        return Fn.ether_plus_map(x, params["u"][:, None], params["v"][:, None])
    first = next(iter(params.values()))
    blocks = torch.stack([Fn.dense_blocks(method, {k: p[i] for k, p in params.items()})
                          for i in range(first.shape[0])])  # (B, n, b, b)
    n, b = blocks.shape[1], blocks.shape[2]
    xb = x.unflatten(-1, (n, b))  # (B, N, n, b)
    return torch.einsum("sNnj,snkj->sNnk", xb, blocks.to(x.dtype)).flatten(-2)


def fold_per_adapter(weight: torch.Tensor, method: str, p_in: dict[str, torch.Tensor],
                     p_out: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """``H̃_a W H_a`` for U adapters at once: weight (f, d), params stacked (U, ...) -> (U, f, d), in weight's dtype.

    Same math as ``functional.fold_weight`` (float32 or wider), with the adapters as a leading dimension.
    """
    if method not in ("ether", "ether_plus"):
        first = next(iter(p_in.values()))
        return torch.stack([Fn.fold_weight(weight, method, {k: p[i] for k, p in p_in.items()},
                                           None if p_out is None else {k: p[i] for k, p in p_out.items()})
                            for i in range(first.shape[0])])
    dtype = torch.promote_types(weight.dtype, torch.float32)
    w = Fn.transform(weight.to(dtype), method, {k: p.to(dtype)[:, None] for k, p in p_in.items()})  # (U, f, d)
    if p_out is not None:  # H̃ W on the rows of Wᵀ, as in fold_weight
        w = Fn.transform(w.mT, method, {k: p.to(dtype)[:, None] for k, p in p_out.items()}).mT  # (U, f, d)
    return w.to(weight.dtype)


def stack_params(per: list[tuple[dict, dict | None]]) -> tuple[dict, dict | None]:
    """[(p_in, p_out)] of several adapters -> (p_in, p_out) with each tensor stacked on a new leading dimension."""
    p_in = {k: torch.stack([pi[k] for pi, _ in per]) for k in per[0][0]}
    p_out = None if per[0][1] is None else {k: torch.stack([po[k] for _, po in per]) for k in per[0][1]}
    return p_in, p_out


def adapted_linear_per_sample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
                              p_in: dict, p_out: dict | None, active: torch.Tensor) -> torch.Tensor:
    """``y_i = H̃_i W H_i x_i + b`` for each sample i with ``active[i]``, ``W x_i + b`` otherwise. x (B, N, d)."""
    keep = active.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1)
    h = torch.where(keep, transform_per_sample(x, method, p_in), x)
    if p_out is None:
        return F.linear(h, weight, bias)
    y = F.linear(h, weight)
    y = torch.where(keep, transform_per_sample(y, method, p_out), y)
    return y if bias is None else y + bias


# ------------------------------------------------------------------ processor side
def expand_names(names: Sequence[str | None], batch: int) -> list[str]:
    """One adapter name per sample of a batch of ``batch``: as given, or tiled when the batch is a multiple (CFG)."""
    names = [NONE if n is None else str(n) for n in names]
    if not names or batch % len(names):
        raise ValueError(f"ether_adapters has {len(names)} names for a batch of {batch}: give one per sample, or "
                         "one per image of the conditional half when classifier-free guidance doubles the batch")
    return names * (batch // len(names))


class PerSampleProjector:
    """Computes a processor's projections with a per-sample choice among its named adapters."""

    def __init__(self, proc: nn.Module, names: Sequence[str | None], batch: int):
        self.proc = proc
        self.names = expand_names(names, batch)
        unknown = sorted({n for n in self.names if n != NONE and n not in proc.adapters})
        if unknown:
            raise KeyError(f"ether_adapters names {unknown} are not loaded; loaded: {sorted(proc.adapters)} "
                           f"(load_ether(model, path, adapter_name=...)), or 'none' for the base model")
        fallback = next(n for n in list(self.names) + list(proc.adapters) if n != NONE)
        self.lookup = [fallback if n == NONE else n for n in self.names]
        self.active = None

    def _cached(self, store: str, projection: str, key: tuple, adapters: tuple, tensors: list, build):
        """``build()`` once for (projection, key), kept in ``proc.<store>`` while ``adapters`` are the same modules
        and neither their parameters nor ``tensors`` changed (``_version``, storage).

        The check on a hit is cheap: a sampling step makes ~100 such calls and is otherwise bound by the host.
        """
        cache = self.proc.__dict__.setdefault(store, {})
        hit = cache.get(projection)
        if (hit is not None and hit[0] == key and all(a is b for a, b in zip(hit[1], adapters))
                and all(t._version == v and t.data_ptr() == ptr for t, v, ptr in hit[2])):
            return hit[3]
        cache.pop(projection, None)  # free the previous value before building the next
        value = build()
        watched = [t for a in adapters for t in a.parameters()] + list(tensors)
        cache[projection] = (key, adapters, [(t, t._version, t.data_ptr()) for t in watched], value)
        return value

    def _stack(self, projection: str) -> tuple[dict, dict | None]:
        """The activation form's parameters, stacked per sample (B, ...); kept across calls at inference."""
        adapters = {n: self.proc.adapter(projection, n) for n in set(self.lookup)}

        def build():
            return stack_params([adapters[n].params() for n in self.lookup])

        if torch.is_grad_enabled():  # a new graph every call
            return build()
        used = tuple(sorted(adapters))
        return self._cached("_per_sample_cache", projection, tuple(self.lookup),
                            tuple(adapters[n] for n in used), [], build)

    def _folded(self, projection: str, linear: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
        """(B, f, d): sample i's weight ``H̃ W H`` (``W`` for "none"), kept while nothing it depends on changes."""
        used = tuple(sorted(set(self.names) - {NONE}))
        adapters = tuple(self.proc.adapter(projection, n) for n in used)

        def build():
            if adapters:
                folded = fold_per_adapter(linear.weight, self.proc.method,
                                          *stack_params([a.params() for a in adapters]))  # (U, f, d)
            else:
                folded = linear.weight[None][:0]
            options = torch.cat([folded.to(dtype), linear.weight.to(dtype)[None]])  # (U + 1, f, d): last = "none"
            slot = {n: i for i, n in enumerate(used)}
            index = torch.tensor([slot.get(n, len(used)) for n in self.names], device=options.device)
            return options.index_select(0, index)  # (B, f, d)

        key = (tuple(self.names), dtype, linear.weight.device)
        return self._cached("_mixed_fold_cache", projection, key, adapters, [linear.weight], build)

    def __call__(self, attn: nn.Module, projection: str, x: torch.Tensor) -> torch.Tensor:
        from .processor import get_projection

        linear = get_projection(attn, projection)
        if self.proc.adapter(projection, self.lookup[0]) is None:
            return linear(x)
        if self.proc.mixed_form == "fold" and not torch.is_grad_enabled():
            dtype = autocast_dtype(x, linear.weight.dtype)
            w = self._folded(projection, linear, dtype)  # (B, f, d)
            xb = x.reshape(len(self.names), -1, x.shape[-1]).to(dtype)  # (B, N, d)
            if linear.bias is None:
                y = torch.bmm(xb, w.mT)
            else:
                y = torch.baddbmm(linear.bias.to(dtype), xb, w.mT)  # (B, N, f)
            return y.reshape(*x.shape[:-1], w.shape[1])
        p_in, p_out = self._stack(projection)
        if self.active is None or self.active.device != x.device:
            self.active = torch.tensor([n != NONE for n in self.names], device=x.device)
        return adapted_linear_per_sample(x, linear.weight, linear.bias, self.proc.method, p_in, p_out, self.active)


# ------------------------------------------------------------------ model-level helpers
def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters loaded in ``model``."""
    from .patch import get_state

    procs = list(get_state(model).processors.values())
    return list(procs[0].adapters) if procs else []


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Use the named adapter for every sample (merge_ether folds the active one)."""
    from .patch import get_state

    names = adapter_names(model)
    if get_state(model).merged:
        raise RuntimeError("unmerge_ether(model) before switching adapters: the merged weights hold the active one")
    if name not in names:
        raise KeyError(f"adapter {name!r} is not loaded; loaded: {names}")
    for proc in get_state(model).processors.values():
        proc.active = name


def set_mixed_form(model: nn.Module, form: str) -> None:
    """How mixed-adapter batches run at inference: "fold" (default) or "act" (see the module docstring)."""
    from .patch import get_state

    if form not in MIXED_FORMS:
        raise ValueError(f"mixed form {form!r} is unknown; choose one of {MIXED_FORMS}")
    for proc in get_state(model).processors.values():
        proc.mixed_form = form
