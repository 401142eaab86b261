"""Results of finished passes (features, per-image areas, pair distances) kept in ``<out>/cache/``, so that a re-run
of an evaluation over the same inputs reuses every pass that had finished and an interrupted one resumes at the
first pass that had not.

An entry's key is a SHA-256 over the pass's name, the model's identity (what the loader reports about its weights and
preprocessing, plus the random-init seed), the pass's settings and the SHA-256 of every input file's bytes, in
order: a changed image, another model or another setting gives another key, and the old entry is not read.
Entries are written by the main process, each atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ether_diffusion.outputs import atomic_write
from eval.distributed import is_main

CACHE_DIR = "cache"
T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes (computed once per file version in a process)."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class StageCache:
    """``run(stage, model, files, settings, compute)``: the cached value of that pass, else ``compute()`` (stored)."""

    def __init__(self, out: str | Path, enabled: bool = True) -> None:
        self.dir = Path(out) / CACHE_DIR
        self.enabled = enabled

    def key(self, stage: str, model: Any, files: Sequence[str | Path], settings: Any = None) -> str:
        head = json.dumps({"stage": stage, "model": model, "settings": settings}, sort_keys=True, default=str)
        sha = hashlib.sha256(head.encode())
        for path in files:
            sha.update(file_digest(path).encode())
        return sha.hexdigest()

    def path(self, stage: str, key: str) -> Path:
        return self.dir / f"{re.sub(r'[^A-Za-z0-9]+', '-', stage).strip('-')}-{key[:32]}.pkl"

    def run(self, stage: str, model: Any, files: Sequence[str | Path], settings: Any,
            compute: Callable[[], T]) -> T:
        if not self.enabled:
            return compute()
        path = self.path(stage, self.key(stage, model, files, settings))
        if path.is_file():
            try:
                value = pickle.loads(path.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                value = None  # unreadable entry: computed again below, and replaced
            else:
                if is_main():
                    print(f"{stage}: reused {path}", flush=True)
                return value
        value = compute()
        if is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            data = pickle.dumps(value)
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        return value


def model_identity(info: Any, random_init: bool, seed: int) -> dict[str, Any]:
    """What identifies a scoring model in a key: its loader's description, and the seed of random-init weights."""
    return {"info": info, "random_init": random_init, "seed": seed if random_init else None}
