"""`generate_s2i(cfg)`: images for a folder of ADE20K annotations with a trained S2I model, and ``manifest.jsonl``.

Image ``j`` of map ``i`` (maps sorted by name) uses seed ``seed + i * num_images_per_map + j`` with a CPU generator,
so it is the same image whatever the batch size, the number of processes or the GPU. Batches are split across the
processes of ``accelerate launch``; the main process writes the manifest (`ether_diffusion.manifest`: ``path``,
``prompt``, ``seed``, ``method``, ``condition`` = the annotation's absolute path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import yaml
from accelerate import PartialState

from ..data.ade20k import load_condition, scan_annotations
from ..models.loading import load_pipeline
from ..outputs import check_writable
from ..sampling import pipeline_dtype, render_rows, set_scheduler
from ..training.base_model import resolve_base_model
from .config import S2IGenerateConfig
from .model import load_s2i_model
from .sampling import sample_from_maps
from .train import CONFIG_FILE


def trained_resolution(model: str | Path) -> int | None:
    """The ``resolution`` of the ``train_config.yaml`` that train_s2i.py writes beside the model, if any."""
    path = Path(model) / CONFIG_FILE
    value = (yaml.safe_load(path.read_text()) or {}).get("resolution") if path.is_file() else None
    return value if isinstance(value, int) else None


def build_s2i_pipeline(cfg: S2IGenerateConfig, device: torch.device):
    """(pipeline on ``device``, controlled UNet, method) for ``cfg.model``."""
    pipe = load_pipeline(cfg.pretrained_model_name_or_path, torch_dtype=pipeline_dtype(cfg.mixed_precision, device),
                         revision=cfg.revision, variant=cfg.variant)
    controlled, method = load_s2i_model(pipe.unet, cfg.model, merge=cfg.merge)
    set_scheduler(pipe, cfg.scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    controlled.control_encoder.to(device)
    return pipe, controlled, method


def generate_s2i(cfg: S2IGenerateConfig) -> Path:
    """Sample every (map, image) pair; returns the manifest path."""
    check_writable(cfg.output_dir)  # before any model loads
    cfg = replace(cfg, pretrained_model_name_or_path=resolve_base_model(cfg.pretrained_model_name_or_path, cfg.model))
    state = PartialState()
    maps = scan_annotations(cfg.annotations, cfg.captions, cfg.prompt, cfg.limit)  # bad input fails before loading
    pipe, controlled, method = build_s2i_pipeline(cfg, state.device)
    method = cfg.method_name or method
    size = cfg.resolution or trained_resolution(cfg.model) or pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = Path(cfg.output_dir)
    n = cfg.num_images_per_map
    rows = [{"path": f"{method}/{name}{f'_{j:02d}' if n > 1 else ''}.png", "prompt": prompt,
             "seed": cfg.seed + i * n + j, "method": method, "condition": str(path.resolve()),
             "base_model": cfg.pretrained_model_name_or_path, "model": cfg.model, "resolution": size,
             "num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
             "scheduler": cfg.scheduler}
            for i, (name, path, prompt) in enumerate(maps) for j in range(n)]

    def render(batch: list[dict]) -> list:
        conditions = torch.stack([load_condition(r["condition"], size) for r in batch])  # (B, 3, R, R)
        return sample_from_maps(pipe, controlled, conditions, [r["prompt"] for r in batch],
                                [r["seed"] for r in batch], cfg.num_inference_steps, cfg.guidance_scale)

    return render_rows(state, rows, out, cfg.batch_size, cfg.skip_existing, f"generate s2i {method}", render)
