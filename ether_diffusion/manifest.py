"""Write ``manifest.jsonl``: one JSON object per generated image, the contract with the eval package.

Schema (kept identical to ``eval/manifest.py``): ``path`` (relative to the manifest's folder), ``prompt``, ``seed``,
``method``, and for DreamBooth ``subject`` and ``prompt_index``; S2I adds ``condition``. Extra keys are allowed.
Rows already in the file whose ``path`` is not rewritten are kept, so several runs (subjects, methods) can share one
output folder and one manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"
REQUIRED = {"path": str, "prompt": str, "seed": int, "method": str}


def check_row(row: dict) -> dict:
    for key, kind in REQUIRED.items():
        if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
            raise ValueError(f"manifest row needs {key} ({kind.__name__}), got {row.get(key)!r}")
    return row


def read_rows(folder: str | Path) -> list[dict]:
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
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in old + new))
    os.replace(tmp, path)
    return path
