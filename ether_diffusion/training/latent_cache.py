"""Cached encodings of a fixed training set: VAE posteriors (and, for S2I, condition maps and text embeddings).

With deterministic crops an image always gives the same pixels (per flip), so its VAE posterior (mean, std) can be
computed once; each step then draws ``mean + std * eps`` from the run's generator exactly as `loss.encode_latents`
does, without running the VAE or touching the image file. `RowTable` holds the cached tensors row by row (a row is an
image in one orientation) on the GPU when they fit in a quarter of its memory, else in pinned host memory, and gathers
a batch's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from tqdm.auto import tqdm

from ..typed_config import ConfigError
from .loss import Shard, encode_posterior, sample_latents


def want_cache(choice: str, fixed_crops: bool, why_not: str) -> bool:
    """``cache_latents`` 'auto' / 'on' / 'off' for a dataset whose crops are ``fixed_crops``; 'on' without fixed
    crops raises naming ``why_not``."""
    if choice == "off":
        return False
    if not fixed_crops:
        if choice == "on":
            raise ConfigError(f"cache_latents on needs deterministic crops, but {why_not}; pass --cache_latents auto")
        return False
    return True


def batches(items: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Stack consecutive tensors of ``items`` into batches of ``size`` (the last may be smaller)."""
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


@torch.no_grad()
def encode_rows(vae, pixels: Iterable[torch.Tensor], total: int, batch_size: int = 8,
                show: bool = True) -> dict[str, torch.Tensor]:
    """{"mean", "std"}: (total, 4, h, w) posteriors of the (3, R, R) images in ``pixels`` (in [-1, 1]), in order."""
    means, stds = [], []
    bar = tqdm(total=total, desc="caching latents", unit="image", disable=not show, dynamic_ncols=True)
    for chunk in batches(pixels, batch_size):
        mean, std = encode_posterior(vae, chunk.to(vae.device))
        means.append(mean)
        stds.append(std)
        bar.update(len(chunk))
    bar.close()
    return {"mean": torch.cat(means), "std": torch.cat(stds)}


class RowTable:
    """Named tensors with one row per cached item: ``gather(rows)`` -> the rows of each, on ``device``."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: torch.device | str):
        self.device = torch.device(device)
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        on_device = self.device.type != "cuda" or nbytes <= torch.cuda.get_device_properties(self.device).total_memory // 4
        home = self.device if on_device else torch.device("cpu")
        self.tensors = {k: t.to(home) for k, t in tensors.items()}
        if not on_device:
            self.tensors = {k: t.pin_memory() for k, t in self.tensors.items()}
        self.home = home

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def gather(self, rows: list[int] | torch.Tensor, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long).to(self.home, non_blocking=True)  # (B,)
        out = {}
        for k in names if names is not None else self.tensors:
            out[k] = self.tensors[k].index_select(0, index).to(self.device, non_blocking=True)
        return out

    def sample_latents(self, rows, generator: torch.Generator, scaling_factor: float,
                       shard: Shard = Shard()) -> torch.Tensor:
        """(B, 4, h, w): one draw from each row's posterior, as `loss.encode_latents` draws it."""
        p = self.gather(rows, ("mean", "std"))
        return sample_latents(p["mean"], p["std"], generator, scaling_factor, shard)
