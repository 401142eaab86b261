"""mIoU / aAcc / mAcc against a direct numpy port of mmseg's intersect_and_union + total_area_to_metrics."""

from __future__ import annotations

import numpy as np
import pytest

from eval.segmentation import AreaTotals, area_totals, per_image_miou, reduce_zero_label, summarize


def mmseg_intersect_and_union(pred, label, num_classes, ignore_index, reduce_zero_label=False):
    """numpy port of mmseg 0.x `intersect_and_union` (torch.histc over [0, C-1] -> np.histogram)."""
    label = label.copy()
    if reduce_zero_label:
        label = label.astype(np.uint8)
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]
    bins, rng = num_classes, (0, num_classes - 1)
    area_intersect = np.histogram(intersect.astype(float), bins=bins, range=rng)[0]
    area_pred = np.histogram(pred.astype(float), bins=bins, range=rng)[0]
    area_label = np.histogram(label.astype(float), bins=bins, range=rng)[0]
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def mmseg_metrics(results, num_classes):
    """mmseg `total_area_to_metrics` + the summary (nanmean) it reports, as fractions."""
    ti, tu, tp, tl = (sum(r[k] for r in results).astype(float) for k in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = ti / tu, ti / tl
    return {"aAcc": ti.sum() / tl.sum(), "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc), "IoU": iou, "Acc": acc}


def hand_made_case():
    """Raw ADE-style annotations (0 = ignore) and predictions in train ids, C = 5.

    Class 3 (train id) never appears anywhere -> NaN, excluded; class 4 is only predicted -> IoU 0, Acc NaN.
    """
    ann1 = np.array([[1, 1, 2, 2], [1, 0, 2, 3], [0, 0, 3, 3]])
    pred1 = np.array([[0, 0, 1, 4], [0, 2, 1, 2], [4, 4, 2, 0]])
    ann2 = np.array([[3, 3, 3, 3], [1, 1, 1, 0], [1, 1, 1, 1]])
    pred2 = np.array([[2, 2, 2, 0], [0, 0, 0, 0], [0, 4, 0, 0]])
    return [(pred1, ann1), (pred2, ann2)], 5


def test_reduce_zero_label_matches_mmseg():
    ann = np.array([[0, 1, 150], [2, 0, 7]], dtype=np.uint8)
    expected = ann.copy()
    expected[expected == 0] = 255
    expected = expected - 1
    expected[expected == 254] = 255
    assert np.array_equal(reduce_zero_label(ann), expected.astype(np.int64))


def test_area_totals_match_mmseg_per_image():
    cases, c = hand_made_case()
    for pred, ann in cases:
        ours = area_totals(pred, reduce_zero_label(ann), c)
        ref = mmseg_intersect_and_union(pred, ann, c, 255, reduce_zero_label=True)
        for got, want in zip((ours.intersect, ours.union, ours.pred, ours.label), ref):
            assert np.array_equal(got, want)


def test_dataset_metrics_match_mmseg_with_absent_and_ignored_classes():
    cases, c = hand_made_case()
    total = sum((area_totals(p, reduce_zero_label(a), c) for p, a in cases), AreaTotals.zeros(c))
    ours = summarize(total)
    ref = mmseg_metrics([mmseg_intersect_and_union(p, a, c, 255, True) for p, a in cases], c)
    for key in ("aAcc", "mIoU", "mAcc"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12)
    assert ours["IoU"][3] is None and np.isnan(ref["IoU"][3])  # absent everywhere: left out of the mean
    assert ours["IoU"][4] == 0.0 and ours["Acc"][4] is None  # predicted only: IoU 0, Acc undefined
    # ignored pixels (annotation 0) count nowhere: 4 of the 24 pixels
    assert total.label.sum() == 24 - 4


def test_accumulated_differs_from_per_image_average():
    cases, c = hand_made_case()
    preds, labels = [p for p, _ in cases], [reduce_zero_label(a) for _, a in cases]
    total = sum((area_totals(p, t, c) for p, t in zip(preds, labels)), AreaTotals.zeros(c))
    assert abs(summarize(total)["mIoU"] - per_image_miou(preds, labels, c)) > 0.01


def test_perfect_prediction_scores_one_and_out_of_range_predictions_are_not_counted():
    rng = np.random.default_rng(0)
    ann = rng.integers(0, 8, size=(20, 30))
    label = reduce_zero_label(ann)
    perfect = summarize(area_totals(np.where(label == 255, 3, label), label, 7))
    assert perfect["mIoU"] == perfect["aAcc"] == perfect["mAcc"] == 1.0
    wild = np.full_like(label, 99)  # outside [0, C): like histc, neither predicted area nor intersection
    totals = area_totals(wild, label, 7)
    assert totals.pred.sum() == 0 and totals.intersect.sum() == 0
    ref = mmseg_intersect_and_union(wild, ann, 7, 255, True)
    assert np.array_equal(totals.union, ref[1])
