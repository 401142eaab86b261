"""FID: 2048-d pool features of torch-fidelity's TF-compatible InceptionV3, and the Fréchet distance between sets.

The extractor is torch-fidelity's `FeatureExtractorInceptionV3` (TF-1.x bilinear resize to 299, the converted
TF 2015-12-05 weights): what torch-fidelity computes, and what torchmetrics computes with `antialias=False`
(torchmetrics' default `antialias=True` resizes differently). The weights file comes from the user or TORCH_HOME.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.distributed import is_main, map_chunks
from eval.hub import torch_hub_file
from eval.images import load_rgb, uint8_chw
from eval.random_init import random_inception

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; eigenvalues below rounding level (relative D * eps) count as 0."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    w = np.where(w > w.max(initial=0) * len(w) * np.finfo(np.float64).eps, w, 0)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), in float64.

    tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): that matrix is symmetric PSD with the eigenvalues of S1 S2,
    so the trace stays real without scipy's eps retry; eigenvalues at rounding level are dropped, not rooted.
    """
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    eig = np.where(eig > eig.max(initial=0) * len(eig) * np.finfo(np.float64).eps, eig, 0)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eig).sum())


def frechet_distance_samples(x1: np.ndarray, x2: np.ndarray) -> float:
    """The same distance from the features themselves, exact when a set has fewer rows than dimensions.

    With centred X_i (N_i, D) and S_i = X_i^T X_i / (N_i - 1): the non-zero eigenvalues of S1 S2 are those of
    C C^T / k, C = X1 X2^T (N1, N2), k = (N1 - 1)(N2 - 1), so tr((S1 S2)^1/2) = ||C||_nuclear / sqrt(k).
    """
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    k = (len(x1) - 1) * (len(x2) - 1)
    trace_sqrt = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt(k)
    traces = (c1 ** 2).sum() / (len(x1) - 1) + (c2 ** 2).sum() / (len(x2) - 1)
    return float(((x1.mean(0) - x2.mean(0)) ** 2).sum() + traces - 2 * trace_sqrt)


def fid_from_features(gen: np.ndarray, ref: np.ndarray) -> float:
    """FID of two (N, D) feature sets: the sample form when either N <= D (exact there), else the covariance form."""
    feature_statistics(gen), feature_statistics(ref)  # shape checks
    if min(len(gen), len(ref)) <= gen.shape[1]:
        return frechet_distance_samples(gen, ref)
    return frechet_distance(*feature_statistics(gen), *feature_statistics(ref))


def load_inception(device: torch.device, weights: str | None = None, random_init: bool = False,
                   seed: int = 0) -> tuple[torch.nn.Module, dict[str, str]]:
    """torch-fidelity's InceptionV3 returning the '2048' pool features, in float32 eval mode."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if random_init:
        net = random_inception(seed)
        info = {"model": "random-init InceptionV3 (torch-fidelity layout)", "weights": f"random, seed {seed}"}
    else:
        path = torch_hub_file(INCEPTION_FILE, INCEPTION_URL, weights, "Inception (FID)", "--inception-weights")
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        info = {"model": "torch-fidelity inception-v3-compat (TF 2015-12-05 weights)", "weights": str(path)}
    info |= {"feature": "2048-d pool3",
             "resize": "torch-fidelity TF1-compatible bilinear to 299 (= torchmetrics with antialias=False)"}
    return net.to(device).eval(), info


@torch.no_grad()
def inception_features(net: torch.nn.Module, paths: Sequence[Path], device: torch.device, batch_size: int,
                       desc: str = "Inception") -> np.ndarray:
    """(N, 2048) float64 features; consecutive images of equal size share a batch (others run alone)."""

    def run(share: list[Path]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        pending: list[torch.Tensor] = []

        def flush() -> None:
            if pending:
                feats = net(torch.stack(pending).to(device))[0]  # (B, 3, H, W) uint8 -> (B, 2048)
                out.extend(feats.double().cpu().numpy())
                pending.clear()

        for path in tqdm(share, desc=desc, disable=not is_main(), leave=False):
            x = uint8_chw(load_rgb(path))  # (3, H, W)
            if pending and (x.shape != pending[0].shape or len(pending) == batch_size):
                flush()
            pending.append(x)
        flush()
        return out

    rows = map_chunks(list(paths), run)
    return np.stack(rows) if rows else np.zeros((0, 2048))
