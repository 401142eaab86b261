"""Write what a run produced: metrics.json (every number and what made it), report.md (tables) and grid.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from eval.grid import dreambooth_grid, s2i_grid

LABELS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "lpips": "LPIPS", "lpips_diversity": "LPIPS div.",
          "mIoU": "mIoU", "aAcc": "aAcc", "mAcc": "mAcc", "fid": "FID"}


def _clean(value: Any) -> Any:
    """NaN / inf -> None, so metrics.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def dreambooth_means_table(p: dict[str, Any]) -> list[str]:
    """The lines of the DreamBooth means table of a payload (or of its metrics.json): one row per method, then the
    "real images" row when there is one."""
    metrics = list(next(iter(p["results"].values()))["means"]) if p["results"] else []
    head = ["method", "images"] + [LABELS[m] for m in metrics]
    rows = [[m, str(r["n_images"])] + [_fmt(r["means"][k]) for k in metrics] for m, r in p["results"].items()]
    if p.get("real_images"):
        rows.append(["real images", "–"] + [_fmt(p["real_images"]["means"].get(k)) for k in metrics])
    return _table(head, rows)


def _dreambooth_sections(p: dict[str, Any]) -> list[str]:
    metrics = list(next(iter(p["results"].values()))["means"]) if p["results"] else []
    lines = ["## Means (flat over all pairs)", "", *dreambooth_means_table(p), ""]
    for method, r in p["results"].items():
        lines += [f"## Per subject: {method}", ""]
        lines += _table(["subject"] + [LABELS[m] for m in metrics],
                        [[s] + [_fmt(v.get(k)) for k in metrics] for s, v in r["per_subject"].items()]) + [""]
        lines += [f"## Per prompt: {method}", ""]
        lines += _table(["prompt", "example"] + [LABELS[m] for m in metrics],
                        [[k, v["example_prompt"]] + [_fmt(v.get(m)) for m in metrics]
                         for k, v in r["per_prompt"].items()]) + [""]
    return lines


def _segmenter_note(model: str) -> str:
    """Which paper's S2I table these numbers sit next to, from the segmenter that scored."""
    name = model.lower()
    if "segformer-b4" in name and "ade" in name:
        return (f"Scored by **{model}**: OFT's segmenter, so mIoU / aAcc compare with OFT's table; the ETHER paper "
                "scored with UperNet-R101 (mmseg), which transformers cannot load.")
    if "upernet" in name:
        return (f"Scored by **{model}**: an UperNet, the nearest transformers has to the ETHER paper's UperNet-R101; "
                "the backbone differs, so compare trends, not decimals.")
    return f"Scored by **{model}**: compare only with numbers from the same segmenter."


def _s2i_sections(p: dict[str, Any]) -> list[str]:
    keys = [k for k in ("mIoU", "aAcc", "mAcc", "fid") if any(k in r for r in p["results"].values())]
    rows = [[m, str(r["n_images"])] + [_fmt(r.get(k), 2 if k == "fid" else 4) for k in keys]
            for m, r in p["results"].items()]
    if p.get("real_images"):
        rows.append(["real images", str(p["real_images"]["n_images"])] +
                    [_fmt(p["real_images"].get(k)) if k != "fid" else "–" for k in keys])
    lines = [_segmenter_note(p["models"]["segmenter"]["model"]), ""] if "segmenter" in p["models"] else []
    lines += ["## Means", "", *_table(["method", "images"] + [LABELS[k] for k in keys], rows), ""]
    small = [m for m, r in p["results"].items() if r.get("fid_n") and r["fid_n"]["generated"] < 2048]
    if small:
        lines += [f"FID from fewer than 2048 images ({', '.join(small)}) is biased upwards; compare only equal sizes.",
                  ""]
    for method, r in p["results"].items():
        present = [(c, v) for c, v in r.get("per_class_iou", {}).items() if v is not None]
        lines += [f"## Per-class IoU: {method} ({len(present)} classes present)", ""]
        lines += _table(["class", "IoU"], [[c, _fmt(v)] for c, v in present]) + [""]
    return lines


def render_markdown(p: dict[str, Any], grid_name: str | None) -> str:
    """The human report; in random-init mode its first line says the numbers are not comparable to any paper."""
    lines = [f"> **{p['warning']}**", ""] if p.get("warning") else []
    lines += [f"# Evaluation report: {p['protocol']['name']}", "", f"Protocol: {p['protocol'].get('source', '')}", ""]
    lines += ["Models that scored:", ""] + [f"- **{k}**: {v['model']}" for k, v in p["models"].items()] + [""]
    lines += _dreambooth_sections(p) if p["protocol"]["name"] == "dreambooth" else _s2i_sections(p)
    if grid_name:
        lines += ["## Samples", "", f"![generated vs real]({grid_name})", ""]
    lines += ["Every number, the models' ids and preprocessing and the resolved config are in `metrics.json`.", ""]
    return "\n".join(lines)


def write_outputs(payload: dict[str, Any], out: str | Path, grid_rows: int = 6,
                  grid_images: int = 4) -> dict[str, Path]:
    """metrics.json + report.md (+ grid.png for the dreambooth and s2i protocols) under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "report": out / "report.md"}
    paths["metrics"].write_text(json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    name = payload["protocol"]["name"]
    grid = None
    if name == "dreambooth":
        grid = dreambooth_grid(payload, grid_rows, grid_images)
    elif name == "s2i-ade20k":
        grid = s2i_grid(payload, grid_rows)
    if grid is not None:
        paths["grid"] = out / "grid.png"
        grid.save(paths["grid"])
    paths["report"].write_text(render_markdown(payload, "grid.png" if grid else None), encoding="utf-8")
    return paths
