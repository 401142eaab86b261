"""``manifest.jsonl``: one JSON object per generated image, the contract between the generators and the eval package.

The one schema: the generators write rows with `write_manifest`; ``eval/manifest.py`` reads them with these tables
(light: the standard library and `outputs`, so the eval package imports it without torch or any training code).

    key            type   required     meaning
    path           str    always       image path, relative to the manifest's folder (or absolute)
    prompt         str    always       the prompt the image was generated from
    seed           int    always       sampling seed
    method         str    always       e.g. "ether", "oft", "lora", "base"; results are reported per method
    subject        str    DreamBooth   DreamBooth folder name, e.g. "dog"
    prompt_index   int    optional     index into the DreamBooth prompt list (0..24); per-prompt tables use it
    condition      str    S2I          ADE20K annotation PNG (class ids), relative to the manifest's folder, absolute,
                                       or a file name looked up under the eval's ``--ade-root``

Any other key is allowed (the generators add e.g. ``base_model``, ``adapter``, ``num_inference_steps``) and ignored by
the eval package. Rows already in the file whose ``path`` is not rewritten are kept, so several runs (subjects,
methods) can share one output folder and one manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from .outputs import atomic_write

MANIFEST_NAME = "manifest.jsonl"
REQUIRED: dict[str, type] = {"path": str, "prompt": str, "seed": int, "method": str}
OPTIONAL: dict[str, type] = {"subject": str, "prompt_index": int, "condition": str}


def has_type(value: object, kind: type) -> bool:
    """Whether ``value`` is a ``kind`` as JSON means it (``true`` is no integer)."""
    return isinstance(value, kind) and not isinstance(value, bool)


def check_row(row: dict) -> dict:
    """``row`` if it has every required key with its type, else a `ValueError` naming the first one that is not."""
    for key, kind in REQUIRED.items():
        if not has_type(row.get(key), kind):
            raise ValueError(f"manifest row needs {key} ({kind.__name__}), got {row.get(key)!r}")
    return row


def read_rows(folder: str | Path) -> list[dict]:
    """The rows of ``folder/manifest.jsonl`` as written (unchecked); [] when there is none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_manifest(folder: str | Path, rows: list[dict], keep_existing: bool = True) -> Path:
    """Write ``rows`` (paths relative to ``folder``) to ``folder/manifest.jsonl`` atomically; returns its path."""
    folder = Path(folder)
    new = [check_row(r) for r in rows]
    paths = {r["path"] for r in new}
    old = [r for r in read_rows(folder) if r.get("path") not in paths] if keep_existing else []
    path = folder / MANIFEST_NAME
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in old + new)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
