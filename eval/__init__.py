"""Evaluation suite for finetuned text-to-image models: reads images + manifest.jsonl, never imports training code.

    from eval import DreamBoothEvalConfig, evaluate_dreambooth, write_outputs
    payload = evaluate_dreambooth(DreamBoothEvalConfig(generated="out/db", real="data/dreambooth", out="out/db_eval"))
    write_outputs(payload, "out/db_eval")

Protocols: `eval.dreambooth` (DINO, CLIP-I, CLIP-T, LPIPS), `eval.s2i` (mIoU / aAcc / mAcc, FID), `eval.fid_folders`.
"""

from eval.config import DreamBoothEvalConfig, FIDEvalConfig, S2IEvalConfig
from eval.dreambooth import evaluate_dreambooth
from eval.errors import EvalInputError, ModelNotAvailableError
from eval.fid import fid_from_features, frechet_distance
from eval.fid_folders import evaluate_fid
from eval.manifest import ManifestRow, read_manifest
from eval.report import write_outputs
from eval.s2i import evaluate_s2i
from eval.segmentation import area_totals, summarize

__all__ = [
    "DreamBoothEvalConfig", "S2IEvalConfig", "FIDEvalConfig", "evaluate_dreambooth", "evaluate_s2i", "evaluate_fid",
    "write_outputs", "read_manifest", "ManifestRow", "EvalInputError", "ModelNotAvailableError",
    "frechet_distance", "fid_from_features", "area_totals", "summarize",
]
