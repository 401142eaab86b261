"""Where model weights come from: a hub id, a local folder or file, or the caches (HF_HOME, TORCH_HOME).

Nothing here downloads when `HF_HUB_OFFLINE=1` (read at call time, so tests can set it late); a model that is
missing raises one `ModelNotAvailableError` that names it and says how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from eval.errors import ModelNotAvailableError


def hub_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set to a true value)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in flags)


def looks_like_path(spec: str) -> bool:
    """A spec that can only be a local path (hub ids are 'owner/name' with no leading dot, slash or tilde)."""
    return spec.startswith(("/", "./", "../", "~", "\\")) or os.path.exists(spec) or spec.count("/") > 1


def _missing(what: str, spec: str, flag: str, reason: str) -> ModelNotAvailableError:
    if looks_like_path(spec):
        return ModelNotAvailableError(f"{what} '{spec}' not found: no such local folder ({reason}); "
                                      f"pass {flag} with the folder that holds its config and weights")
    return ModelNotAvailableError(
        f"{what} '{spec}' is not available offline; download it on a machine with internet "
        f"(hf download {spec} --local-dir {spec.rsplit('/', 1)[-1]}) and pass {flag} /path/to/it "
        "(or put it in the HF cache)")


def hf_load(loader: Callable[..., Any], spec: str, what: str, flag: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(spec)` honouring offline mode; any load failure -> `ModelNotAvailableError`."""
    if looks_like_path(spec) and not Path(spec).expanduser().is_dir():
        raise _missing(what, spec, flag, "path does not exist")
    spec = str(Path(spec).expanduser()) if looks_like_path(spec) else spec
    try:
        return loader.from_pretrained(spec, local_files_only=hub_offline() or looks_like_path(spec), **kwargs)
    except (OSError, ValueError) as err:  # hub errors subclass OSError; a wrong folder raises ValueError/OSError
        raise _missing(what, spec, flag, type(err).__name__) from err


def torch_hub_file(filename: str, url: str, explicit: str | None, what: str, flag: str) -> Path:
    """A weights file: `explicit` if given, else TORCH_HOME/hub/checkpoints/`filename`, else downloaded from `url`."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(f"{what} weights '{explicit}' not found; pass {flag} with an existing file")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    if hub_offline():
        raise ModelNotAvailableError(
            f"{what} weights '{filename}' are not available offline; download {url} on a machine with internet "
            f"and pass {flag} /path/to/{filename} (or put it in {cached.parent})")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=True)
    except Exception as err:  # network errors come in many types
        raise ModelNotAvailableError(
            f"{what} weights could not be downloaded from {url} ({type(err).__name__}); "
            f"download it elsewhere and pass {flag} /path/to/{filename}") from err
    return cached
