"""Pure functions from embeddings / per-pair values to the means the papers report.

The protocol mean is one flat mean over all pairs (OFT's `oft-db/eval.py` appends every pair of every subject to one
list), so subjects with more real images weigh more; per-subject and per-prompt means are flat means over their pairs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np
import torch


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, D), (B, D) -> (A, B) cosine similarities of L2-normalised rows, in float64."""
    a = a.double() / a.double().norm(dim=-1, keepdim=True)
    b = b.double() / b.double().norm(dim=-1, keepdim=True)
    return a @ b.T


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """Entries (i, j), i != j, of a square matrix, row-major: the self-pairs of one image set."""
    n = matrix.shape[0]
    return matrix[~np.eye(n, dtype=bool)]


def upper_pairs(n: int) -> list[tuple[int, int]]:
    """All (i, j) with i < j < n."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def flat_mean(values: Sequence[np.ndarray]) -> float:
    """Mean over every element of every array (NaN when there is none)."""
    flat = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
    return float(flat.mean()) if flat.size else float("nan")


def grouped_flat_means(values: Sequence[np.ndarray], keys: Sequence[Hashable]) -> dict[Hashable, float]:
    """{key: flat mean of the arrays that carry that key}, keys in first-seen order."""
    groups: dict[Hashable, list[np.ndarray]] = defaultdict(list)
    for value, key in zip(values, keys, strict=True):
        groups[key].append(value)
    return {key: flat_mean(group) for key, group in groups.items()}


def pair_count(values: Sequence[np.ndarray]) -> int:
    return int(sum(np.size(v) for v in values))
