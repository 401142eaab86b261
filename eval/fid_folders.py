"""`python -m eval fid`: FID between two folders of images (per method when the generated folder has a manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.config import FIDEvalConfig, config_to_dict
from eval.distributed import pick_device
from eval.errors import EvalInputError
from eval.fid import fid_from_features, inception_features, load_inception
from eval.images import check_readable, list_images
from eval.manifest import MANIFEST_NAME, read_manifest
from eval.provenance import provenance
from eval.stage_cache import StageCache, model_identity


def _generated_sets(folder: Path) -> dict[str, list[Path]]:
    if (folder / MANIFEST_NAME).is_file():
        rows = read_manifest(folder)
        return {m: [r.path for r in rows if r.method == m] for m in dict.fromkeys(r.method for r in rows)}
    return {"generated": list_images(folder)}


def evaluate_fid(cfg: FIDEvalConfig) -> dict[str, Any]:
    sets = _generated_sets(Path(cfg.generated))
    reference = list_images(cfg.reference)
    if len(reference) < 2 or any(len(paths) < 2 for paths in sets.values()):
        raise EvalInputError("FID needs at least 2 images in every set; check --generated and --reference")
    check_readable(reference, "reference")
    for paths in sets.values():
        check_readable(paths, "generated")
    device = pick_device(cfg.device)
    net, info = load_inception(device, cfg.inception_weights, cfg.random_init, cfg.seed)
    cache, model_id = StageCache(cfg.out, cfg.reuse), model_identity(info, cfg.random_init, cfg.seed)

    def features(paths: list[Path], desc: str):
        return cache.run(desc, model_id, paths, None,
                         lambda: inception_features(net, paths, device, cfg.batch_size, desc))

    ref = features(reference, "Inception reference")
    results = {}
    for method, paths in sets.items():
        gen = features(paths, f"Inception {method}")
        results[method] = {"n_images": len(paths), "fid": fid_from_features(gen, ref),
                           "fid_n": {"generated": len(paths), "reference": len(reference)}}
    return {**provenance(cfg.random_init),
            "protocol": {"name": "fid", "fid": "torch-fidelity InceptionV3 2048-d pool features, "
                                              "generated vs reference folder"},
            "models": {"inception": info}, "config": config_to_dict(cfg), "n_images": sum(map(len, sets.values())),
            "results": results, "real_images": None}
