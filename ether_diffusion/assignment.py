"""Which adapter each sample of a batch uses: ``cross_attention_kwargs={"ether_adapters": names}`` in diffusers' batch
order, turned into an ``Assignment`` (the per-sample form that computes with it: ``layer.PerSampleProjector``).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NONE = "none"  # the base model, in ether_adapters


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
