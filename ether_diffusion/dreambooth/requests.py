"""A requests file for mixed-subject generation: one JSON object per line, each a prompt with its own adapter.

    {"prompt": "a sks dog on the beach", "adapter": "runs/dog-ether/adapter", "subject": "dog", "prompt_index": 0}
    {"prompt": "a sks cat in the snow", "adapter": "runs/cat-ether/adapter", "seed": 7}
    {"prompt": "a photo of a dog", "adapter": null}

``prompt`` is required; ``adapter`` (a saved ETHER-family adapter folder, or null / "none" for the base model) and
``seed`` are optional; any other key is copied into the manifest rows (``subject`` and ``prompt_index`` make the
rows ready for ``python -m eval dreambooth``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

from ..assignment import NONE
from ..typed_config import ConfigError

# written by the generator for every row (``seed`` is the one a request may set)
RESERVED = ("path", "method", "adapter_name", "base_model", "num_inference_steps", "guidance_scale")


def read_requests(path: str | Path) -> list[dict]:
    """Rows of a requests file, checked; ``adapter`` is None for the base model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"requests_file {str(path)!r} not found; one JSON object per line "
                                '({"prompt": ..., "adapter": folder or null})')
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{k}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ConfigError(f"{path}:{k}: each line must be an object with a string 'prompt'")
        adapter = row.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            raise ConfigError(f"{path}:{k}: 'adapter' must be a folder path, null or \"none\"")
        if "seed" in row and (not isinstance(row["seed"], int) or isinstance(row["seed"], bool)):
            raise ConfigError(f"{path}:{k}: 'seed' must be an integer")
        clash = [key for key in RESERVED if key in row]
        if clash:
            raise ConfigError(f"{path}:{k}: {clash} are written by the generator; drop them from the request")
        row["adapter"] = None if adapter in (None, NONE) else adapter
        rows.append(row)
    if not rows:
        raise ConfigError(f"requests_file {str(path)!r} holds no request")
    return rows


def adapter_labels(folders: list[str]) -> dict[str, str]:
    """A short unique name per adapter folder: its last path parts joined by '_', as few as make it unique
    (``runs/dog/adapter`` and ``runs/cat/adapter`` -> ``dog_adapter``, ``cat_adapter``)."""
    parts = {f: PurePath(f).parts or (f,) for f in folders}
    depth = 1
    while True:
        labels = {f: "_".join(p[-depth:]) for f, p in parts.items()}
        if len(set(labels.values())) == len(labels) or depth > max(len(p) for p in parts.values()):
            break
        depth += 1
    if len(set(labels.values())) < len(labels):  # same text, different spelling of one folder: number them
        labels = {f: f"{labels[f]}_{i}" for i, f in enumerate(folders)}
    if NONE in labels.values():
        labels = {f: f"adapter_{lab}" if lab == NONE else lab for f, lab in labels.items()}
    return labels
