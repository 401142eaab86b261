"""Batched, progress-barred passes of a model over image files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from eval.distributed import is_main, map_chunks
from eval.images import load_rgb


def batches(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def embed_files(paths: Sequence[Path], embed: Callable[[list[Image.Image]], torch.Tensor], batch_size: int,
                desc: str) -> torch.Tensor:
    """(N, D) embeddings of the image files, computed in batches and shared across processes."""

    def run(share: list[Path]) -> list[torch.Tensor]:
        rows: list[torch.Tensor] = []
        for chunk in tqdm(batches(share, batch_size), desc=desc, disable=not is_main(), leave=False):
            rows.extend(embed([load_rgb(p) for p in chunk]))  # (B, D) -> B rows of (D,)
        return rows

    rows = map_chunks(list(paths), run)
    return torch.stack(rows) if rows else torch.zeros(0, 0)
