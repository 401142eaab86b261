"""The S2I training cache: per sample, the VAE posterior of the photo, the class ids of the map (both per
orientation) and the caption's text embedding, computed once and kept in a folder across epochs and runs.

One file per sample, ``<cache_dir>/<key>.safetensors``, where the key hashes everything the entry depends on: the
photo's and the annotation's bytes, the prompt, the resolution, the crop, the flips, and a fingerprint of the VAE and
text encoder (classes, configs, dtype and a few weight tensors). A changed image, caption, resolution or model gives a
new key, so a stale entry is never read; files are written atomically (a killed build leaves no partial entry).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data.ade20k import ADE20KDataset
from ..outputs import atomic_write
from ..training.latent_cache import RowTable
from ..training.loss import encode_posterior, encode_prompts

ENV = "ETHER_DIFFUSION_CACHE"


def default_cache_dir() -> Path:
    """``$ETHER_DIFFUSION_CACHE/latents``, else ``$XDG_CACHE_HOME/ether-diffusion/latents`` (``~/.cache``)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]) / "latents"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ether-diffusion" / "latents"


def model_fingerprint(pipe) -> str:
    """What the cached encodings depend on in the pipeline: VAE and text encoder classes, configs, dtypes and the
    bytes of their first and last parameters (cheap, and different for any other trained weights)."""
    h = hashlib.sha256()
    for module in (pipe.vae, pipe.text_encoder):
        h.update(type(module).__name__.encode())
        config = getattr(module, "config", {})
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            h.update(str(p.dtype).encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def entry_key(dataset: ADE20KDataset, i: int, fingerprint: str) -> str:
    sample = dataset.samples[i]
    h = hashlib.sha256()
    for path in (sample.image, sample.annotation):
        h.update(Path(path).read_bytes())
    h.update(json.dumps([sample.prompt, dataset.resolution, dataset.crop, dataset.random_flip, fingerprint]).encode())
    return h.hexdigest()


@torch.no_grad()
def build_table(dataset: ADE20KDataset, pipe, device, cache_dir: str | Path, batch_size: int = 8,
                show: bool = True) -> tuple[RowTable, RowTable]:
    """(rows ``i * flips + flip`` with "mean", "std" (posteriors) and "ids" (class ids, uint8); rows ``i`` with
    "text" (embeddings)). Entries missing from ``cache_dir`` are encoded and written first."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(pipe)
    keys = [entry_key(dataset, i, fingerprint) for i in range(len(dataset))]
    missing = [i for i, k in enumerate(keys) if not (cache_dir / f"{k}.safetensors").is_file()]
    bar = tqdm(total=len(missing), desc=f"caching latents in {cache_dir}", unit="sample",
               disable=not show or not missing, dynamic_ncols=True)
    pairs = dataset.cache_pairs(missing)
    for start in range(0, len(missing), batch_size):
        chunk = [next(pairs) for _ in missing[start:start + batch_size]]
        pixels = torch.cat([p for _, p, _ in chunk]).to(device)  # (sum V, 3, R, R)
        mean, std = encode_posterior(pipe.vae, pixels)
        text = encode_prompts(pipe, [dataset.samples[i].prompt for i, _, _ in chunk], device)  # (b, 77, C)
        v = dataset.flips
        for j, (i, _, ids) in enumerate(chunk):
            entry = {"mean": mean[j * v:(j + 1) * v], "std": std[j * v:(j + 1) * v], "ids": ids, "text": text[j]}
            tensors = {k: t.detach().contiguous().cpu() for k, t in entry.items()}
            atomic_write(cache_dir / f"{keys[i]}.safetensors", lambda tmp: save_file(tensors, tmp))
        bar.update(len(chunk))
    bar.close()
    entries = [load_file(str(cache_dir / f"{k}.safetensors")) for k in keys]
    rows = {name: torch.cat([e[name] for e in entries]) for name in ("mean", "std", "ids")}
    return RowTable(rows, device), RowTable({"text": torch.stack([e["text"] for e in entries])}, device)
