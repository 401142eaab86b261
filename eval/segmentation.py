"""mIoU / aAcc / mAcc exactly as mmsegmentation computes them for ADE20K (pure numpy).

mmseg (`mmseg/evaluation/metrics/iou_metric.py`, and 0.x `mmseg/core/evaluation/metrics.py`): per image, pixels
whose label is the ignore index are dropped and per-class areas (intersection, union, prediction, label) are
counted; the areas are summed over the whole set; then
    IoU_c = I_c / U_c,  Acc_c = I_c / L_c,  aAcc = sum I / sum L,  mIoU = nanmean_c IoU_c,  mAcc = nanmean_c Acc_c.
A class absent from both prediction and labels has U_c = 0 -> NaN -> left out of the mean; a class only predicted
has IoU 0. This is not the mean of per-image mIoUs (see `per_image_miou`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """ADE20K annotation ids -> train ids: 0 ('other') -> 255 (ignored), k -> k - 1."""
    label = np.asarray(label).astype(np.int64)
    return np.where(label == 0, IGNORE_INDEX, label - 1)


@dataclass
class AreaTotals:
    """Per-class pixel counts, each (C,) int64; add them up over images with `+`."""

    intersect: np.ndarray
    union: np.ndarray
    pred: np.ndarray
    label: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> "AreaTotals":
        return cls(*(np.zeros(num_classes, dtype=np.int64) for _ in range(4)))

    def __add__(self, other: "AreaTotals") -> "AreaTotals":
        return AreaTotals(self.intersect + other.intersect, self.union + other.union, self.pred + other.pred,
                          self.label + other.label)


def _count(values: np.ndarray, num_classes: int) -> np.ndarray:
    values = values[(values >= 0) & (values < num_classes)]  # like torch.histc over [0, C-1]: others not counted
    return np.bincount(values, minlength=num_classes).astype(np.int64)


def area_totals(pred: np.ndarray, label: np.ndarray, num_classes: int,
                ignore_index: int = IGNORE_INDEX) -> AreaTotals:
    """Areas of one image: pred and label are (H, W) train ids; label == ignore_index is not scored."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in size")
    keep = label != ignore_index
    p, t = pred[keep].astype(np.int64), label[keep].astype(np.int64)  # (K,)
    intersect = _count(t[p == t], num_classes)
    area_pred, area_label = _count(p, num_classes), _count(t, num_classes)
    return AreaTotals(intersect, area_pred + area_label - intersect, area_pred, area_label)


def summarize(totals: AreaTotals) -> dict[str, object]:
    """aAcc, mIoU, mAcc (fractions in [0, 1], not mmseg's x100) and per-class IoU / Acc (None where NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = totals.intersect / totals.union.astype(np.float64)
        acc = totals.intersect / totals.label.astype(np.float64)
        aacc = totals.intersect.sum() / float(totals.label.sum())
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    return {"aAcc": float(aacc), "mIoU": mean(iou), "mAcc": mean(acc),
            "IoU": [None if np.isnan(v) else float(v) for v in iou],
            "Acc": [None if np.isnan(v) else float(v) for v in acc]}


def per_image_miou(preds: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> float:
    """Mean over images of each image's own mIoU: NOT the protocol; kept to show (and test) the difference."""
    return float(np.mean([summarize(area_totals(p, t, num_classes))["mIoU"] for p, t in zip(preds, labels)]))
