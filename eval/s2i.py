"""Segmentation-to-image protocol on ADE20K: mIoU / aAcc / mAcc of a segmenter run on the generated images, and FID.

Each generated image is segmented and scored against the annotation it was conditioned on (150 classes, label 0
ignored: mmseg's `reduce_zero_label`); areas are summed over the whole set before the ratios (eval.segmentation).
FID compares the generated images with the original val image of each condition used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from eval.ade20k import ADE20K_CLASSES, read_annotation, reference_image, resolve_condition
from eval.batching import batches
from eval.config import S2IEvalConfig, config_to_dict
from eval.distributed import is_main, map_chunks, pick_device
from eval.errors import EvalInputError
from eval.fid import fid_from_features, inception_features, load_inception
from eval.images import check_readable, load_rgb
from eval.manifest import read_manifest
from eval.provenance import provenance
from eval.stage_cache import StageCache, model_identity
from eval.stages import StageLog
from eval.segmentation import AreaTotals, area_totals, reduce_zero_label, summarize
from eval.segmenter import Segmenter, load_segmenter

PROTOCOL = {
    "name": "s2i-ade20k",
    "source": "ETHER paper (UperNet-101, mmseg) / OFT (SegFormer-B4); metrics as mmseg IoUMetric",
    "labels": "150 classes; annotation 0 ignored, k -> k-1 (reduce_zero_label)",
    "accumulation": "intersection / union / label areas summed over all images, then ratios",
    "mIoU": "nanmean over classes of I/U", "mAcc": "nanmean over classes of I/L", "aAcc": "sum I / sum L",
    "fid": "torch-fidelity InceptionV3 2048-d pool features, generated vs the original val images",
}


def score_images(segmenter: Segmenter, images: Sequence[Path], annotations: Sequence[Path], cfg: S2IEvalConfig,
                 desc: str) -> list[AreaTotals]:
    """Per-image class areas of `segmenter` on `images` against `annotations` (pairs in order)."""
    pairs = list(zip(images, annotations, strict=True))

    def run(share: list[tuple[Path, Path]]) -> list[AreaTotals]:
        out = []
        for chunk in tqdm(batches(share, cfg.batch_size), desc=desc, disable=not is_main(), leave=False):
            pics = [load_rgb(img) for img, _ in chunk]
            raw = [read_annotation(ann, cfg.num_classes) for _, ann in chunk]
            labels = [reduce_zero_label(t) if cfg.reduce_zero_label else t for t in raw]  # (H, W) train ids
            if cfg.score_at == "generated":  # labels brought to the image's size, nearest neighbour
                labels = [np.array(Image.fromarray(t.astype(np.uint8)).resize(p.size, Image.NEAREST)).astype(np.int64)
                          for t, p in zip(labels, pics)]
            preds = segmenter.predict(pics, [t.shape for t in labels])
            out.extend(area_totals(p, t, cfg.num_classes) for p, t in zip(preds, labels))
        return out

    return map_chunks(pairs, run)


def _scores(totals: Sequence[AreaTotals], num_classes: int) -> dict[str, Any]:
    total = sum(totals, AreaTotals.zeros(num_classes))
    summary = summarize(total)
    names = ADE20K_CLASSES if num_classes == len(ADE20K_CLASSES) else [str(i) for i in range(num_classes)]
    return {"n_images": len(totals), "mIoU": summary["mIoU"], "aAcc": summary["aAcc"], "mAcc": summary["mAcc"],
            "per_class_iou": dict(zip(names, summary["IoU"])), "per_class_acc": dict(zip(names, summary["Acc"]))}


def evaluate_s2i(cfg: S2IEvalConfig, segmenter: Segmenter | None = None) -> dict[str, Any]:
    """Score `cfg.generated` against ADE20K; `segmenter` overrides the configured one (tests, custom models).

    Every image (generated, annotations, references) and every model is checked before the first pass; each
    finished pass writes its numbers to ``<out>/stages.json``.
    """
    rows = read_manifest(cfg.generated, require=("condition",))
    manifest_dir = Path(cfg.generated)
    annotations = [resolve_condition(r.condition, manifest_dir, cfg.ade_root, r.path) for r in rows]
    unique_ann = list(dict.fromkeys(annotations))
    references = {a: reference_image(a, cfg.ade_root, cfg.fid_reference) for a in unique_ann}
    found = {a: p for a, p in references.items() if p is not None}
    if cfg.score_real and len(found) < len(unique_ann):
        raise EvalInputError("score_real needs the original val image of every condition; "
                             f"{len(unique_ann) - len(found)} missing under {cfg.ade_root}/images/validation")
    if cfg.fid and len(found) < 2:
        raise EvalInputError(f"FID needs the original val images (found {len(found)} under "
                             f"{cfg.ade_root}/images/validation); pass --fid-reference DIR or --no-fid")
    check_readable([r.path for r in rows], "generated")
    check_readable(unique_ann, "annotation")
    if cfg.score_real or cfg.fid:
        check_readable(list(found.values()), "reference")
    device = pick_device(cfg.device)
    if segmenter is None:
        segmenter = load_segmenter(cfg.segmenter, device, cfg.num_classes, cfg.random_init, cfg.seed)
    inception = load_inception(device, cfg.inception_weights, cfg.random_init, cfg.seed) if cfg.fid else None
    stages = StageLog(cfg.out)
    cache = StageCache(cfg.out, cfg.reuse)
    models: dict[str, Any] = {"segmenter": segmenter.info}
    seg_id = model_identity(segmenter.info, cfg.random_init, cfg.seed)
    settings = {"score_at": cfg.score_at, "reduce_zero_label": cfg.reduce_zero_label, "num_classes": cfg.num_classes}

    def segment(images: list[Path], anns: list[Path], desc: str) -> list[AreaTotals]:
        return cache.run(desc, seg_id, [*images, *anns], {**settings, "n_images": len(images)},
                         lambda: score_images(segmenter, images, anns, cfg, desc))

    totals = segment([r.path for r in rows], annotations, "segment generated")
    methods = list(dict.fromkeys(r.method for r in rows))
    results = {m: _scores([t for t, r in zip(totals, rows) if r.method == m], cfg.num_classes) for m in methods}
    stages.log("segment generated", {m: {k: results[m][k] for k in ("mIoU", "aAcc", "mAcc")} for m in methods})

    real = None
    if cfg.score_real:
        real = _scores(segment(list(found.values()), list(found), "segment real"), cfg.num_classes)
        stages.log("segment real", {k: real[k] for k in ("mIoU", "aAcc", "mAcc")})
    if inception is not None:
        net, models["inception"] = inception
        inception_id = model_identity(models["inception"], cfg.random_init, cfg.seed)

        def features(paths: list[Path], desc: str):
            return cache.run(desc, inception_id, paths, None,
                             lambda: inception_features(net, paths, device, cfg.batch_size, desc))

        ref = features(list(found.values()), "Inception real")
        for method in methods:
            paths = [r.path for r in rows if r.method == method]
            gen = features(paths, f"Inception {method}")
            results[method]["fid"] = fid_from_features(gen, ref) if len(paths) >= 2 else None
            results[method]["fid_n"] = {"generated": len(paths), "reference": len(ref)}
        stages.log("fid", {m: results[m]["fid"] for m in methods})
    return {
        **provenance(cfg.random_init),
        "protocol": PROTOCOL,
        "models": models,
        "config": config_to_dict(cfg),
        "n_images": len(rows),
        "results": results,
        "real_images": real,
        "generated": [{"path": str(r.path), "method": r.method, "prompt": r.prompt, "condition": str(a),
                       "reference": str(references[a]) if references[a] else None}
                      for r, a in zip(rows, annotations)],
    }
