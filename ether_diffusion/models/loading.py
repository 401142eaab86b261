"""Load a base Stable Diffusion pipeline the way users name it: ``tiny``, a local diffusers folder, or a hub id.

With no network (or ``HF_HUB_OFFLINE=1``) a hub id works only if it is in the Hugging Face cache; otherwise one
`ModelNotAvailableError` says so and how to pass a local folder instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..user_errors import ModelNotAvailableError
from .tiny import TINY_ID, tiny_pipeline


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip(os.sep).replace("/", "", 1) or "\\" in name


def _offline_message(name: str, reason: str) -> str:
    return (f"model {name!r} is not available offline ({reason}); download it once where there is network "
            f"(hf download {name}) or pass a local path: --pretrained_model_name_or_path "
            "/path/to/stable-diffusion-v1-5 (a diffusers folder with model_index.json)")


def load_pipeline(name_or_path: str, torch_dtype: torch.dtype | None = None, revision: str | None = None,
                  variant: str | None = None, seed: int = 0):
    """A `StableDiffusionPipeline` (safety checker off) for ``tiny``, a local folder or a hub id."""
    from diffusers import StableDiffusionPipeline

    if name_or_path == TINY_ID:
        pipe = tiny_pipeline(seed)
        return pipe.to(torch_dtype) if torch_dtype not in (None, torch.float32) else pipe
    local = Path(name_or_path).expanduser()
    if local.exists() or _looks_like_path(name_or_path):
        if not local.is_dir():
            raise ModelNotAvailableError(f"model folder {name_or_path!r} does not exist; pass a diffusers folder with "
                                         "model_index.json, a hub id, or 'tiny'")
        if not (local / "model_index.json").is_file():
            raise ModelNotAvailableError(f"{str(local)!r} is not a diffusers pipeline folder (no model_index.json); "
                                         "save one with pipeline.save_pretrained(...)")
    kwargs = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                  revision=revision, variant=variant)
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    try:
        return StableDiffusionPipeline.from_pretrained(str(local) if local.is_dir() else name_or_path, **kwargs)
    except Exception as e:  # hub errors come as OSError, ValueError, HTTP or offline errors depending on versions
        if local.is_dir():
            raise ModelNotAvailableError(f"could not load the pipeline in {str(local)!r}: "
                                         f"{str(e).splitlines()[0]}") from e
        text = str(e)
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        known = ("offline", "connect", "cache", "resolve", "not found", "couldn't", "cannot find", "does not appear")
        if offline or any(k in text.lower() for k in known) or isinstance(e, OSError):
            reason = "HF_HUB_OFFLINE is set and it is not in the cache" if offline else \
                "it is not in the Hugging Face cache and the hub cannot be reached"
            raise ModelNotAvailableError(_offline_message(name_or_path, reason)) from e
        raise
