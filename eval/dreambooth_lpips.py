"""LPIPS for the subject-driven protocol: real x generated pairs, the generated-set diversity, real self-pairs.

Work is split by (method, subject, prompt) group so each generated image passes through the trunk once: its
features serve both its pairs with the subject's real images and the within-group diversity pairs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Hashable, Sequence

import lpips
import numpy as np
import torch
from tqdm.auto import tqdm

from eval.batching import batches
from eval.distributed import is_main, map_chunks
from eval.images import load_rgb, lpips_input
from eval.lpips_metric import Features, lpips_cross, lpips_features
from eval.manifest import ManifestRow
from eval.pairwise import off_diagonal, upper_pairs


class _FeatureSource:
    """LPIPS features of image files, in batches, with a per-process cache of the real images."""

    def __init__(self, model: lpips.LPIPS, device: torch.device, size: int, batch_size: int):
        self.model, self.device, self.size, self.batch_size = model, device, size, batch_size
        self._real: dict[Hashable, Features] = {}

    def of(self, paths: Sequence[Path]) -> Features:
        parts: list[Features] = []
        for chunk in batches(paths, self.batch_size):
            x = torch.stack([lpips_input(load_rgb(p), self.size) for p in chunk]).to(self.device)  # (B, 3, S, S)
            parts.append(lpips_features(self.model, x))
        return [torch.cat([p[layer] for p in parts]) for layer in range(len(parts[0]))]

    def real(self, subject: str, paths: Sequence[Path]) -> Features:
        if subject not in self._real:
            self._real = {subject: self.of(paths)}  # keep one subject: groups arrive sorted by subject
        return self._real[subject]


def group_rows(rows: Sequence[ManifestRow], prompt_key) -> list[list[int]]:
    """Row indices grouped by (method, subject, prompt key), groups sorted by subject for real-feature reuse."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.method, row.subject, prompt_key(row))].append(i)
    return [groups[k] for k in sorted(groups, key=lambda k: (str(k[1]), str(k[0]), str(k[2])))]


def lpips_generated(model: lpips.LPIPS, rows: Sequence[ManifestRow], real: dict[str, list[Path]], prompt_key,
                    device: torch.device, size: int, batch_size: int,
                    diversity: bool) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Per row: (R_s,) LPIPS to each real image of its subject; per row's group: diversity pair values.

    Returns (cross, div): cross[i] for row i; div[i] holds its group's pair values on the group's first row only
    (None elsewhere), so that flat means count each pair once.
    """
    groups = group_rows(rows, prompt_key)
    source = _FeatureSource(model, device, size, batch_size)

    def run(share: list[list[int]]) -> list[tuple[list[np.ndarray], np.ndarray]]:
        out = []
        for group in tqdm(share, desc="LPIPS", disable=not is_main(), leave=False):
            subject = rows[group[0]].subject
            gen = source.of([rows[i].path for i in group])
            cross = lpips_cross(model, source.real(subject, real[subject]), gen).numpy()  # (R, G)
            pairs = np.array([lpips_cross(model, [f[a : a + 1] for f in gen], [f[b : b + 1] for f in gen]).item()
                              for a, b in upper_pairs(len(group))]) if diversity else np.zeros(0)
            out.append(([cross[:, g] for g in range(len(group))], pairs))
        return out

    results = map_chunks(groups, run)
    cross_by_row: list[np.ndarray] = [np.zeros(0)] * len(rows)
    div_by_row: list[np.ndarray | None] = [None] * len(rows)
    for group, (cross, pairs) in zip(groups, results, strict=True):
        for i, values in zip(group, cross, strict=True):
            cross_by_row[i] = values
        div_by_row[group[0]] = pairs
    return cross_by_row, div_by_row


def lpips_real_self_pairs(model: lpips.LPIPS, real: dict[str, list[Path]], device: torch.device, size: int,
                          batch_size: int) -> dict[str, np.ndarray]:
    """{subject: LPIPS of every ordered pair (i, j), i != j, of its real images} (OFT's SelfPairwise datasets)."""
    source = _FeatureSource(model, device, size, batch_size)
    subjects = sorted(real)

    def run(share: list[str]) -> list[np.ndarray]:
        out = []
        for subject in tqdm(share, desc="LPIPS real", disable=not is_main(), leave=False):
            feats = source.of(real[subject])
            out.append(off_diagonal(lpips_cross(model, feats, feats).numpy()))
        return out

    return dict(zip(subjects, map_chunks(subjects, run), strict=True))
