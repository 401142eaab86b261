"""Train one DreamBooth setup over a grid of learning rates and methods; record distances, energy, loss, metrics.

Each run trains in segments of ``record_every`` steps through `train_dreambooth` with exact resume from its own
checkpoints, so the recorded trajectory is the one of a single uninterrupted run. After each segment the adapter
is loaded on a fresh base UNet and measured (`analysis.layer_stats`): ``||H - I||_F`` summed over layers and sides,
``||W' - W||_F``, hyperspherical energy. Optionally each finished run is sampled on the subject's evaluation
prompts and scored with the eval package, called as a library (`dreambooth.evaluate`). Each run starts from the
shipped ``dreambooth/configs/<method>.yaml``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ..data.dreambooth import PROMPTS_FILE, read_prompts_file
from ..dreambooth.config import DreamBoothConfig, shipped_config
from ..dreambooth.evaluate import evaluate_samples
from ..dreambooth.generate import generate
from ..dreambooth.generate_config import GenerateConfig
from ..dreambooth.train import train_dreambooth
from ..names import TINY_RESOLUTION
from ..outputs import check_writable
from ..typed_config import ConfigError, load_config
from .config import StudyConfig
from .plots import plot_study
from .weights import adapter_summary, load_base_unet

NOTICE_TINY = ("Numbers from the `tiny` model (random weights, a few steps): they show the tool works and the "
               "geometric properties (ETHER's fixed distance), not the paper's results.")


def _run_config(cfg: StudyConfig, method: str, lr: float, class_token: str, out: Path) -> DreamBoothConfig:
    overrides = dict(
        pretrained_model_name_or_path=cfg.pretrained_model_name_or_path, method=method, learning_rate=lr,
        lr_scheduler="constant", lr_warmup_steps=0, scale_lr=False, seed=0, output_dir=str(out),
        instance_data_dir=str(Path(cfg.dreambooth_root) / cfg.subject),
        instance_prompt=f"a photo of {cfg.unique_token} {class_token}", validation_prompt=None, report_to="none",
        with_prior_preservation=False)
    if cfg.tiny:
        overrides.update(resolution=TINY_RESOLUTION, max_train_steps=12, mixed_precision="no")
    if cfg.max_train_steps is not None:
        overrides["max_train_steps"] = cfg.max_train_steps
    return load_config(DreamBoothConfig, shipped_config(method), **overrides)


def _evaluate(cfg: StudyConfig, adapter: Path, out: Path) -> dict:
    prompts = Path(cfg.dreambooth_root) / PROMPTS_FILE
    manifest = generate(GenerateConfig(
        pretrained_model_name_or_path=cfg.pretrained_model_name_or_path, adapter=str(adapter), subject=cfg.subject,
        prompts_and_classes=str(prompts), unique_token=cfg.unique_token, output_dir=str(out / "samples"),
        num_images_per_prompt=1, num_inference_steps=cfg.num_inference_steps or (4 if cfg.tiny else 50),
        batch_size=25 if cfg.tiny else 4, resolution=TINY_RESOLUTION if cfg.tiny else None))
    metrics = evaluate_samples(manifest.parent, cfg.dreambooth_root, out / "eval", cfg.unique_token, tiny=cfg.tiny)
    return next(iter(metrics["results"].values()))["means"]


def run_one(cfg: StudyConfig, method: str, lr: float, class_token: str, out: Path, base_unet) -> dict:
    """Train one (method, lr) in segments; returns its trajectory and final numbers."""
    train_cfg = _run_config(cfg, method, lr, class_token, out)
    total = train_cfg.max_train_steps
    every = cfg.record_every or max(1, total // 4)
    trajectory = []
    for end in sorted({*range(every, total, every), total}):
        seg = load_config(DreamBoothConfig, None, **{**vars(train_cfg), "max_train_steps": end,
                                                     "checkpointing_steps": every, "resume_from_checkpoint": "latest",
                                                     "checkpoints_total_limit": 1})
        result = train_dreambooth(seg)
        loss = result.get("loss")
        point = {"step": result["step"], "loss": None if loss is None or not math.isfinite(loss) else loss}
        point.update(adapter_summary(base_unet, result["adapter_dir"], method))
        trajectory.append(point)
        print(f"  {method} lr={lr:g} step {point['step']}: loss={point['loss']} "
              f"||H-I||={point['transform_dist']} ||W'-W||={point['weight_dist']:.4g} HE={point['he']:.6g}",
              flush=True)
    run = {"method": method, "learning_rate": lr, "trajectory": trajectory, "final": trajectory[-1]}
    if cfg.evaluate:
        run["metrics"] = _evaluate(cfg, out / "adapter", out)
    if not cfg.keep_runs:
        for ckpt in out.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
    return run


def run_study(cfg: StudyConfig) -> Path:
    """Run the grid; writes ``study.json`` and the plots into ``output_dir``; returns the JSON path."""
    classes, _, _ = read_prompts_file(Path(cfg.dreambooth_root) / PROMPTS_FILE)
    if cfg.subject not in classes:
        raise ConfigError(f"subject {cfg.subject!r} is not in {cfg.dreambooth_root}/{PROMPTS_FILE}")
    out = check_writable(cfg.output_dir)  # before any model loads
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    base_unet = load_base_unet(cfg.pretrained_model_name_or_path)
    for method in cfg.methods:
        for lr in cfg.learning_rates:
            print(f"[study] {method} at lr {lr:g}", flush=True)
            run_dir = out / "runs" / f"{method}_lr{lr:g}"
            runs.append(run_one(cfg, method, lr, classes[cfg.subject], run_dir, base_unet))
            (out / "study.json").write_text(json.dumps(_document(cfg, runs), indent=2))  # nothing lost if stopped
    path = out / "study.json"
    path.write_text(json.dumps(_document(cfg, runs), indent=2))
    plot_study(json.loads(path.read_text()), out)
    return path


def _document(cfg: StudyConfig, runs: list[dict]) -> dict:
    return {"model": cfg.pretrained_model_name_or_path, "subject": cfg.subject,
            "notice": NOTICE_TINY if cfg.tiny else None, "config": {k: v for k, v in vars(cfg).items()},
            "runs": runs}
