"""Evaluation suite for finetuned text-to-image models: reads images + manifest.jsonl, never imports training code.

    from eval import DreamBoothEvalConfig, evaluate_dreambooth, write_outputs
    cfg = DreamBoothEvalConfig(generated="out/db", real="data/dreambooth", out="out/db_eval")
    write_outputs(evaluate_dreambooth(cfg), cfg.out)

Protocols: `eval.dreambooth` (DINO, CLIP-I, CLIP-T, LPIPS), `eval.s2i` (mIoU / aAcc / mAcc, FID), `eval.fid_folders`.
Names are imported on first use, so `python -m eval --help` does not load torch models' code.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DreamBoothEvalConfig": "eval.config", "S2IEvalConfig": "eval.config", "FIDEvalConfig": "eval.config",
    "evaluate_dreambooth": "eval.dreambooth", "evaluate_s2i": "eval.s2i", "evaluate_fid": "eval.fid_folders",
    "write_outputs": "eval.report", "read_manifest": "eval.manifest", "ManifestRow": "eval.manifest",
    "EvalInputError": "eval.errors", "ModelNotAvailableError": "eval.errors",
    "frechet_distance": "eval.fid", "fid_from_features": "eval.fid",
    "area_totals": "eval.segmentation", "summarize": "eval.segmentation",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eval' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
