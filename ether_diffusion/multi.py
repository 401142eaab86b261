"""Many adapters in one model: named adapters, and a different adapter for each sample of a batch.

A reflection is a few numbers per layer, so one UNet can hold hundreds of subjects and apply a different one to each
sample: the transforms act per sample on the activations while the (shared, frozen) projection weights are used once
for the whole batch: no weight copies, no merging.

    load_ether(pipe.unet, "dog_adapter", adapter_name="dog")
    load_ether(pipe.unet, "cat_adapter", adapter_name="cat")
    pipe(["a sks dog", "a sks cat", "a dog"], cross_attention_kwargs={"ether_adapters": ["dog", "cat", "none"]})

``ether_adapters`` lists one name per image, in the order the pipeline returns images (prompt-major: with
``num_images_per_prompt=k`` the k images of prompt 0 come first), or one name per prompt; ``"none"`` (or None) runs
the base model for that image. The model's forward hook reads it in diffusers' batch order: the images once, or
[uncond; cond] under classifier-free guidance (each image's unconditional pass uses its adapter). Where the length
leaves open whether a batch of 2n is guidance or two images per prompt, the batch is guidance exactly when its two
halves are equal (as ``torch.cat([latents] * 2)`` makes them), decided on the device: both readings are built and
the comparison picks one there, with no host sync (``resolve_names``). ``cross_attention_kwargs=
{"ether_images_per_prompt": k}`` states k outright. Any other length is refused.

Two forms compute a mixed batch (``EtherAttnProcessor.mixed_form``):

- ``"fold"`` (default at inference, i.e. without gradients): each sample's adapter is folded into its own copy of
  the weight once, ``W_i = H̃_i W H_i`` (the base ``W`` for "none"), and each projection is one batched matmul
  ``y_i = W_i x_i + b``. The folded stack (B, f, d) is built in every call (nothing is kept to the next step, so
  values written behind autograd's back are always seen): per projection one fold per adapter (O(U f d)), one
  gather and one ``bmm`` where a single adapter costs one ``linear``. Memory: one weight copy per sample of the UNet
  batch for each adapted projection (SD 1.5, bf16, the four attention projections: ~190 MB per sample, so ~3 GB for
  8 prompts with classifier-free guidance).
- ``"act"`` (always with gradients): the maps act per sample on the activations and the shared weight is used once
  for the whole batch: no weight copies, several small kernels per projection.

A projection that is not a bare ``nn.Linear`` (a LoRA layer, an offload hook) always takes the activation form around
a call of the module (``compose_per_sample``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import functional as Fn
from .kernels import autocast_dtype
from .projection import call_without_bias, get_projection, is_hooked, is_plain
from .state import UnknownAdapterError, get_state

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
@dataclass
class Assignment:
    """Which adapter each sample of a batch uses: ``names`` (the adapters used, sorted) and ``index`` (B,), each
    sample's slot in ``names``, ``len(names)`` for the base model. Built once per forward, on the batch's device."""

    names: tuple[str, ...]
    index: torch.Tensor


def expand_names(names: Sequence[str | None], batch: int, images_per_prompt: int | None = None,
                 guidance: bool | None = None) -> list[str]:
    """One adapter name per sample of a UNet batch of ``batch``, in diffusers' batch order.

    ``names`` has one name per image, or one per prompt with ``images_per_prompt`` (k). The images are
    prompt-major (the k images of prompt 0 first), and under classifier-free guidance the batch is
    [uncond; cond], each half holding every image once. ``guidance`` says whether the batch is such a pair of
    halves (None: not known, which is enough wherever the length alone decides). Without ``images_per_prompt``,
    k is batch / len(names) (halved under guidance). Any other length is refused.
    """
    names = [NONE if n is None else str(n) for n in names]
    wanted = ("give one name per image (prompt-major, as the pipeline returns them), or one per prompt with "
              "cross_attention_kwargs ether_images_per_prompt=num_images_per_prompt")
    if not names:
        raise ValueError(f"ether_adapters is empty; {wanted}")
    if images_per_prompt is not None:
        k = images_per_prompt
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ether_images_per_prompt must be a positive integer, got {k!r}")
        n = len(names) * k
        halves = batch == 2 * n and guidance is not False
        if batch != n and not halves:
            raise ValueError(f"ether_adapters has {len(names)} names x {k} images per prompt = {n} images, but "
                             f"the UNet batch is {batch} (it must be {n}, or {2 * n} under guidance)")
    else:
        if batch % len(names):
            raise ValueError(f"ether_adapters has {len(names)} names for a UNet batch of {batch}; {wanted}")
        r = batch // len(names)
        if r > 1 and r % 2 == 0 and guidance is None:
            raise ValueError(f"ether_adapters has {len(names)} names for a UNet batch of {batch}: whether that is "
                             f"classifier-free guidance is not known here; pass ether_images_per_prompt")
        halves = r % 2 == 0 and bool(guidance)
        k = r // 2 if halves else r
    per_image = [name for name in names for _ in range(k)]  # prompt-major
    return per_image * 2 if halves else per_image


def _slots(per_sample: list[str], used: tuple[str, ...]) -> list[int]:
    slot = {n: i for i, n in enumerate(used)}
    return [slot.get(n, len(used)) for n in per_sample]


def _to_device(values: list[int], device: torch.device) -> torch.Tensor:
    # a copy that does not wait for the device: pinned host memory, non-blocking
    t = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def assign(names: Sequence[str | None], batch: int, device: torch.device, images_per_prompt: int | None = None,
           guidance: bool | torch.Tensor | None = None) -> Assignment:
    """``expand_names`` as an ``Assignment`` on ``device``. ``guidance`` may be a boolean tensor on the device
    (0-dim): both readings of the batch are built and the tensor picks one there, with no host sync."""
    used = tuple(sorted({NONE if n is None else str(n) for n in names} - {NONE}))
    if not torch.is_tensor(guidance):
        return Assignment(used, _to_device(_slots(expand_names(names, batch, images_per_prompt, guidance), used),
                                           device))
    with_cfg = _to_device(_slots(expand_names(names, batch, images_per_prompt, True), used), device)
    without = _to_device(_slots(expand_names(names, batch, images_per_prompt, False), used), device)
    return Assignment(used, torch.where(guidance, with_cfg, without))


def resolve_names(names: Sequence[str | None], sample: torch.Tensor, images_per_prompt: int | None = None
                  ) -> Assignment:
    """The assignment for the UNet input ``sample`` (B, ...). Where the length leaves open whether a batch of 2n
    is classifier-free guidance (n images, [uncond; cond]) or 2n images, it is guidance exactly when the two halves
    of ``sample`` are equal, as diffusers' pipelines build it (``torch.cat([latents] * 2)``): that comparison is
    made on the device and picks between the two readings there."""
    batch, L = sample.shape[0], len(names)
    open_ = (L > 0 and images_per_prompt is None and batch % L == 0 and batch // L % 2 == 0)
    guidance = None
    if open_:
        half = batch // 2
        guidance = (sample[:half] == sample[half:]).all()  # 0-dim bool on the device
    return assign(names, batch, sample.device, images_per_prompt, guidance)


class PerSampleProjector:
    """Computes a processor's projections with a per-sample choice among its named adapters."""

    def __init__(self, proc: nn.Module, assignment: Assignment):
        self.proc = proc
        self.names, self.index = assignment.names, assignment.index
        unknown = [n for n in self.names if n not in proc.adapters]
        if unknown:
            raise UnknownAdapterError(f"ether_adapters names {unknown} are not loaded; loaded: "
                                      f"{sorted(proc.adapters)} (load_ether(model, path, adapter_name=...)), or "
                                      "'none' for the base model")
        self.active = self.index < len(self.names)  # (B,) bool: False runs the base model

    def _stack(self, projection: str, call: bool = False) -> tuple[dict, dict | None]:
        """The activation form's parameters, gathered per sample (B, ...) from those of the adapters used (a
        "none" sample gets the first adapter's, masked off by ``active``). ``call``: read them through each
        adapter's module call (its hooks run: offload)."""
        adapters = [self.proc.adapter(projection, n) for n in self.names]
        p_in, p_out = stack_params([a() if call else a.params() for a in adapters])  # (U, ...)
        index = self.index.clamp(max=len(self.names) - 1)
        gather = lambda ps: None if ps is None else {k: t.index_select(0, index) for k, t in ps.items()}  # noqa: E731
        return gather(p_in), gather(p_out)

    def _folded(self, projection: str, linear: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
        """(B, f, d): sample i's weight ``H̃ W H`` (``W`` for "none"), folded once per adapter."""
        folded = fold_per_adapter(linear.weight, self.proc.method,
                                  *stack_params([self.proc.adapter(projection, n).params() for n in self.names]))
        options = torch.cat([folded.to(dtype), linear.weight.to(dtype)[None]])  # (U + 1, f, d): last = "none"
        return options.index_select(0, self.index)  # (B, f, d)

    def __call__(self, attn: nn.Module, projection: str, x: torch.Tensor) -> torch.Tensor:
        linear = get_projection(attn, projection)
        if not self.names or self.proc.adapter(projection, self.names[0]) is None:
            return linear(x)  # every sample runs the base model, or this projection is not adapted
        if not is_plain(linear) or any(is_hooked(self.proc.adapter(projection, n)) for n in self.names):
            # wrapped or hooked: the maps act per sample around a call of the module
            p_in, p_out = self._stack(projection, call=True)
            return compose_per_sample(x, linear, self.proc.method, p_in, p_out, self.active)
        if self.proc.mixed_form == "fold" and not torch.is_grad_enabled():
            dtype = autocast_dtype(x, linear.weight.dtype)
            w = self._folded(projection, linear, dtype)  # (B, f, d)
            xb = x.reshape(w.shape[0], -1, x.shape[-1]).to(dtype)  # (B, N, d)
            if linear.bias is None:
                y = torch.bmm(xb, w.mT)
            else:
                y = torch.baddbmm(linear.bias.to(dtype), xb, w.mT)  # (B, N, f)
            return y.reshape(*x.shape[:-1], w.shape[1])
        p_in, p_out = self._stack(projection)
        return adapted_linear_per_sample(x, linear.weight, linear.bias, self.proc.method, p_in, p_out, self.active)


def compose_per_sample(x: torch.Tensor, linear: nn.Module, method: str, p_in: dict, p_out: dict | None,
                       active: torch.Tensor) -> torch.Tensor:
    """``projection.compose_linear`` with parameters stacked per sample (B, ...): x (B, N, d) -> (B, N, f); sample
    i with ``active[i]`` false runs the module alone."""
    keep = active.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1)
    h = torch.where(keep, transform_per_sample(x, method, p_in), x)
    if p_out is None:
        return linear(h)
    z, b = call_without_bias(linear, h)
    y = torch.where(keep, transform_per_sample(z, method, p_out), z)
    return y if b is None else y + b


# ------------------------------------------------------------------ model-level helpers
def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters loaded in ``model``."""
    procs = list(get_state(model).processors.values())
    return list(procs[0].adapters) if procs else []


def check_loaded(model: nn.Module, adapter_name: str | None) -> None:
    """Raise ``UnknownAdapterError`` (one line) unless ``adapter_name`` is None or a loaded adapter."""
    if adapter_name is not None and adapter_name not in (loaded := adapter_names(model)):
        raise UnknownAdapterError(f"adapter {adapter_name!r} is not loaded; loaded: {loaded}")


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Use the named adapter for every sample (merge_ether folds the active one)."""
    if get_state(model).merged:
        raise RuntimeError("unmerge_ether(model) before switching adapters: the merged weights hold the active one")
    check_loaded(model, name)
    for proc in get_state(model).processors.values():
        proc.active = name


def set_mixed_form(model: nn.Module, form: str) -> None:
    """How mixed-adapter batches run at inference: "fold" (default) or "act" (see the module docstring)."""
    if form not in MIXED_FORMS:
        raise ValueError(f"mixed form {form!r} is unknown; choose one of {MIXED_FORMS}")
    for proc in get_state(model).processors.values():
        proc.mixed_form = form
