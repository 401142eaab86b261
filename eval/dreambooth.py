"""Subject-driven protocol: DINO, CLIP-I, CLIP-T, LPIPS (+ DreamBooth's diversity) per method, subject and prompt.

Follows OFT's official evaluation (`Zeju1997/oft`, `oft-db/eval.py`), whose "Real images" row the ETHER paper
reprints: every real image of the subject x every generated image, one flat mean over all pairs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from eval.batching import embed_files
from eval.config import DreamBoothEvalConfig, config_to_dict
from eval.distributed import pick_device
from eval.dreambooth_lpips import lpips_generated, lpips_real_self_pairs
from eval.encoders import load_clip, load_dino
from eval.errors import EvalInputError
from eval.images import check_readable, is_all_black, subject_images
from eval.lpips_metric import load_lpips
from eval.manifest import ManifestRow, read_manifest
from eval.pairwise import cosine_matrix, flat_mean, grouped_flat_means, off_diagonal, pair_count
from eval.provenance import provenance
from eval.stage_cache import StageCache, model_identity
from eval.stages import StageLog

PROTOCOL = {
    "name": "dreambooth",
    "source": "OFT official eval (Zeju1997/oft oft-db/eval.py), reused by the ETHER paper",
    "pairs": "every real image of the subject x each generated image; flat mean over all pairs",
    "dino": "CLS token of last_hidden_state, cosine",
    "clip_i": "cosine of projected image embeddings",
    "clip_t": "cosine of projected image and prompt embeddings (raw, not x100)",
    "lpips": "lpips net='alex' v0.1, images resized to 512 x 512 and scaled to [-1, 1]",
    "lpips_diversity": "DreamBooth paper's diversity: LPIPS between generated images of the same subject and prompt",
    "real_images": "real x real pairs of each subject, i != j",
    "black_images": "all-black generated images (safety checker) are left out, as OFT's datasets do",
}


def prompt_key(row: ManifestRow) -> str:
    """Per-prompt grouping: the prompt list index when the manifest has it, else the prompt text."""
    return f"{row.prompt_index:02d}" if row.prompt_index is not None else row.prompt


def _summaries(values: Sequence[np.ndarray | None], rows: Sequence[ManifestRow]) -> dict[str, Any]:
    """Flat means of one metric over the rows' pair values: overall, per subject, per prompt."""
    kept = [(v, r) for v, r in zip(values, rows, strict=True) if v is not None]
    vals = [v for v, _ in kept]
    return {"mean": flat_mean(vals), "pairs": pair_count(vals),
            "per_subject": grouped_flat_means(vals, [r.subject for _, r in kept]),
            "per_prompt": grouped_flat_means(vals, [prompt_key(r) for _, r in kept])}


def aggregate(per_row: dict[str, Sequence[np.ndarray | None]], rows: Sequence[ManifestRow]) -> dict[str, Any]:
    """{method: {n_images, means, pairs, per_subject, per_prompt}} from per-row pair values of each metric."""
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r.method for r in rows):
        idx = [i for i, r in enumerate(rows) if r.method == method]
        sub = [rows[i] for i in idx]
        stats = {m: _summaries([v[i] for i in idx], sub) for m, v in per_row.items()}
        subjects = list(dict.fromkeys(r.subject for r in sub))
        prompts = {k: next(r.prompt for r in sub if prompt_key(r) == k) for k in dict.fromkeys(map(prompt_key, sub))}
        out[method] = {
            "n_images": len(idx),
            "means": {m: s["mean"] for m, s in stats.items()},
            "pairs": {m: s["pairs"] for m, s in stats.items()},
            "per_subject": {s: {m: st["per_subject"].get(s) for m, st in stats.items()} for s in subjects},
            "per_prompt": {k: {"example_prompt": p, **{m: st["per_prompt"].get(k) for m, st in stats.items()}}
                           for k, p in prompts.items()},
        }
    return out


def _real_row(self_pairs: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    metrics = list(self_pairs)
    subjects = list(next(iter(self_pairs.values()))) if self_pairs else []
    return {"means": {m: flat_mean(list(self_pairs[m].values())) for m in metrics},
            "pairs": {m: pair_count(list(self_pairs[m].values())) for m in metrics},
            "per_subject": {s: {m: flat_mean([self_pairs[m][s]]) for m in metrics} for s in subjects}}


def _strip(prompt: str, word: str | None) -> str:
    return " ".join(w for w in prompt.split() if w != word) if word else prompt


def _cosine_pairs(gen: torch.Tensor, ref: torch.Tensor, rows: Sequence[ManifestRow], real_slice: dict[str, slice],
                  self_pairs: bool) -> tuple[list[np.ndarray], dict[str, np.ndarray] | None]:
    """Per row: (R_s,) cosines to its subject's real images; per subject: real x real cosines with i != j."""
    per_row = [cosine_matrix(gen[i : i + 1], ref[real_slice[r.subject]]).numpy()[0] for i, r in enumerate(rows)]
    real = {s: off_diagonal(cosine_matrix(ref[sl], ref[sl]).numpy()) for s, sl in real_slice.items()}
    return per_row, (real if self_pairs else None)


def _clip_t(clip: Any, gen: torch.Tensor, prompts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Per row: (1,) cosine of its image embedding and its prompt's text embedding."""
    unique = list(dict.fromkeys(prompts))
    text = torch.cat([clip.embed_texts(unique[i : i + batch_size]) for i in range(0, len(unique), batch_size)])
    index = {p: i for i, p in enumerate(unique)}  # text: (P, D)
    return [cosine_matrix(gen[i : i + 1], text[index[p]][None]).numpy()[0] for i, p in enumerate(prompts)]


def _stage_means(per_row: dict[str, Sequence[np.ndarray | None]], rows: Sequence[ManifestRow]) -> dict[str, Any]:
    return {method: r["means"] for method, r in aggregate(per_row, rows).items()}


def evaluate_dreambooth(cfg: DreamBoothEvalConfig) -> dict[str, Any]:
    """Score the generated images of `cfg.generated` against `cfg.real`; returns the metrics.json payload.

    Every image and every model is checked (headers read, weights loaded) before the first pass; each finished pass
    writes its numbers to ``<out>/stages.json``.
    """
    rows = read_manifest(cfg.generated, require=("subject",))
    check_readable([r.path for r in rows], "generated")
    black = [r for r in rows if is_all_black(r.path)] if cfg.skip_black_images else []
    rows = [r for r in rows if r not in black]  # OFT's datasets return None for all-black images
    if not rows:
        raise EvalInputError("every generated image is all black; nothing to score (see skip_black_images)")
    subjects = list(dict.fromkeys(r.subject for r in rows))
    real = {s: subject_images(cfg.real, s) for s in subjects}
    real_paths = [p for s in subjects for p in real[s]]
    bounds = np.cumsum([0] + [len(real[s]) for s in subjects])
    real_slice = {s: slice(int(bounds[k]), int(bounds[k + 1])) for k, s in enumerate(subjects)}  # s in real_paths
    check_readable(real_paths, "real")
    device = pick_device(cfg.device)
    wants_clip = {"clip_i", "clip_t"} & set(cfg.metrics)
    wants_lpips = {"lpips", "lpips_diversity"} & set(cfg.metrics)
    encoders = {name: loader(spec, device, cfg.random_init, cfg.seed)  # preflight: every model before any pass
                for name, loader, spec, wanted in (("dino", load_dino, cfg.dino, "dino" in cfg.metrics),
                                                   ("clip", load_clip, cfg.clip, bool(wants_clip))) if wanted}
    lpips_model = load_lpips(device, cfg.lpips_backbone, cfg.random_init, cfg.seed) if wants_lpips else None
    stages = StageLog(cfg.out)
    cache = StageCache(cfg.out, cfg.reuse)
    gen_paths = [r.path for r in rows]
    per_row: dict[str, list] = {}
    self_pairs: dict[str, dict[str, np.ndarray]] = {}
    models: dict[str, Any] = {}

    for metric, name in (("dino", "dino"), ("clip_i", "clip")):
        if name not in encoders:
            continue
        encoder = encoders[name]
        models[name] = encoder.info
        model_id = model_identity(encoder.info, cfg.random_init, cfg.seed)
        gen = cache.run(f"{name} generated", model_id, gen_paths, None,  # (G, D)
                        lambda: embed_files(gen_paths, encoder.embed_images, cfg.batch_size, f"{name} generated"))
        if metric in cfg.metrics:
            ref = cache.run(f"{name} real", model_id, real_paths, None,  # (R_all, D)
                            lambda: embed_files(real_paths, encoder.embed_images, cfg.batch_size, f"{name} real"))
            per_row[metric], real_pairs = _cosine_pairs(gen, ref, rows, real_slice, cfg.real_self_pairs)
            if real_pairs is not None:
                self_pairs[metric] = real_pairs
        if name == "clip" and "clip_t" in cfg.metrics:
            per_row["clip_t"] = _clip_t(encoder, gen, [_strip(r.prompt, cfg.clip_t_remove) for r in rows],
                                        cfg.batch_size)
        stages.log(name, _stage_means({m: v for m, v in per_row.items()
                                       if m in (("dino",) if name == "dino" else ("clip_i", "clip_t"))}, rows))

    if lpips_model is not None:
        model, models["lpips"] = lpips_model
        model_id = model_identity(models["lpips"], cfg.random_init, cfg.seed)
        diversity = "lpips_diversity" in cfg.metrics
        groups = [(r.subject, prompt_key(r)) for r in rows]  # which pairs each row's values come from
        cross, div = cache.run("lpips generated", model_id, [*gen_paths, *real_paths],
                               {"size": cfg.lpips_size, "diversity": diversity, "groups": groups,
                                "real_per_subject": [len(real[s]) for s in subjects]},
                               lambda: lpips_generated(model, rows, real, prompt_key, device, cfg.lpips_size,
                                                       cfg.batch_size, diversity=diversity))
        if "lpips" in cfg.metrics:
            per_row["lpips"] = cross
            if cfg.real_self_pairs:
                self_pairs["lpips"] = cache.run(
                    "lpips real", model_id, real_paths,
                    {"size": cfg.lpips_size, "subjects": subjects,
                     "real_per_subject": [len(real[s]) for s in subjects]},
                    lambda: lpips_real_self_pairs(model, real, device, cfg.lpips_size, cfg.batch_size))
        if "lpips_diversity" in cfg.metrics:
            per_row["lpips_diversity"] = div
        stages.log("lpips", _stage_means({m: v for m, v in per_row.items() if m.startswith("lpips")}, rows))

    order = [m for m in cfg.metrics if m in per_row]
    return {
        **provenance(cfg.random_init),
        "protocol": PROTOCOL,
        "models": models,
        "config": config_to_dict(cfg),
        "n_images": len(rows),
        "skipped_black_images": [str(r.path) for r in black],
        "subjects": {s: [str(p) for p in real[s]] for s in subjects},
        "results": aggregate({m: per_row[m] for m in order}, rows),
        "real_images": _real_row(self_pairs) if self_pairs else None,
        "generated": [{"path": str(r.path), "method": r.method, "subject": r.subject, "prompt": r.prompt}
                      for r in rows],
    }
