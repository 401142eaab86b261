"""The one-command demo: train -> generate -> evaluate -> report, on ``tiny`` (CPU, minutes) or on a real model.

With ``tiny`` the base model is random, so the images are noise and the metrics only prove the loop runs; the
report says so. With a real model (e.g. SD 1.5) the training values come unchanged from the shipped
``configs/<method>.yaml`` and the evaluation uses the real DINO / CLIP / LPIPS weights. The eval package scores the
samples and draws the grid (``eval/``); ``REPORT.md`` puts the run, the grid and the means table on one page.
"""

from __future__ import annotations

from pathlib import Path

from eval.report import dreambooth_means_table

from ..data.dreambooth import read_prompts_file
from ..names import PROMPTS_FILE, TINY_RESOLUTION
from ..typed_config import ConfigError, load_config
from .config import CONFIGS, DreamBoothConfig, shipped_config
from .demo_config import DemoConfig
from .evaluate import evaluate_samples
from .generate import generate
from .generate_config import BASE, GenerateConfig
from .train import train_dreambooth

TINY_NOTICE = ("**The `tiny` model is untrained (random weights): its images are noise and every number below is a "
               "smoke test of the train -> generate -> evaluate loop, not a result.** Run the same command with "
               "`--pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5` (or a local SD 1.5 "
               "folder) for the real experiment.")


def _train_config(cfg: DemoConfig, class_token: str) -> DreamBoothConfig:
    path = Path(cfg.train_config) if cfg.train_config else shipped_config(cfg.method)
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise ConfigError(f"no training config {path}; pass --train_config with a YAML file, or a --method with a "
                          f"shipped config ({shipped})")
    out = Path(cfg.output_dir)
    overrides = dict(
        pretrained_model_name_or_path=cfg.pretrained_model_name_or_path, method=cfg.method,
        instance_data_dir=str(Path(cfg.dreambooth_root) / cfg.subject),
        instance_prompt=f"a photo of {cfg.unique_token} {class_token}", class_prompt=f"a photo of {class_token}",
        class_data_dir=str(out / "class_images" / class_token.replace(" ", "_")), output_dir=str(out / "train"),
        validation_prompt=f"a {cfg.unique_token} {class_token} in the jungle", resume_from_checkpoint="latest")
    if cfg.tiny:  # a few minutes on 2 CPU cores
        overrides.update(resolution=TINY_RESOLUTION, max_train_steps=30, num_class_images=2, class_inference_steps=2,
                         num_validation_images=2, validation_inference_steps=4, validation_steps=15,
                         checkpointing_steps=15, checkpoints_total_limit=1, mixed_precision="no")
    if cfg.max_train_steps is not None:
        overrides["max_train_steps"] = cfg.max_train_steps
    return load_config(DreamBoothConfig, path, **overrides)


def write_report(cfg: DemoConfig, train_cfg: DreamBoothConfig, result: dict, metrics: dict) -> Path:
    """``REPORT.md``: what ran, the eval package's grid (``eval/grid.png``) and its means table."""
    out = Path(cfg.output_dir)
    lines = ["# ether-diffusion demo", ""]
    if cfg.tiny:
        lines += ["> " + TINY_NOTICE, ""]
    if metrics.get("warning"):
        lines += [f"> {metrics['warning']}", ""]
    lines += [f"- base model: `{cfg.pretrained_model_name_or_path}`; adapter: `{cfg.method}` "
              f"(n_blocks={train_cfg.n_blocks}), {result['step']} steps at {train_cfg.resolution} px, "
              f"lr {train_cfg.learning_rate:g}, prior preservation: {train_cfg.with_prior_preservation}",
              f"- subject: `{cfg.subject}` ({train_cfg.instance_prompt!r}); adapter saved in "
              f"`{Path(result['adapter_dir']).relative_to(out)}`",
              "", "## Samples", "", "![grid](eval/grid.png)", "",
              "The real photos of the subject, then the first images of each method.", "",
              "## Metrics (DreamBooth protocol: DINO, CLIP-I, CLIP-T up; LPIPS = distance to the real images)", "",
              *dreambooth_means_table(metrics), "",
              "Full tables per prompt: `eval/report.md`; every number: `eval/metrics.json`.", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def run_demo(cfg: DemoConfig) -> Path:
    """Run the whole loop; returns the path of REPORT.md."""
    out = Path(cfg.output_dir)
    prompts_file = Path(cfg.dreambooth_root) / PROMPTS_FILE
    classes, _, _ = read_prompts_file(prompts_file)
    if cfg.subject not in classes:
        raise ConfigError(f"subject {cfg.subject!r} is not in {prompts_file}; choose one of {', '.join(classes)}")
    train_cfg = _train_config(cfg, classes[cfg.subject])
    print(f"[1/4] training {cfg.method} on {train_cfg.instance_data_dir}", flush=True)
    result = train_dreambooth(train_cfg)

    print("[2/4] sampling the 25 evaluation prompts", flush=True)
    gen = dict(pretrained_model_name_or_path=cfg.pretrained_model_name_or_path, subject=cfg.subject,
               prompts_and_classes=str(prompts_file), unique_token=cfg.unique_token, output_dir=str(out / "samples"),
               num_images_per_prompt=cfg.num_images_per_prompt or (2 if cfg.tiny else 4),
               num_inference_steps=cfg.num_inference_steps or (4 if cfg.tiny else 50), batch_size=10 if cfg.tiny else 4,
               resolution=TINY_RESOLUTION if cfg.tiny else None)
    manifest = generate(GenerateConfig(adapter=str(result["adapter_dir"]), **gen))
    if cfg.baseline:
        generate(GenerateConfig(method_name=BASE, **gen))

    print("[3/4] evaluating", flush=True)
    metrics = evaluate_samples(manifest.parent, cfg.dreambooth_root, out / "eval", cfg.unique_token, tiny=cfg.tiny)

    print("[4/4] writing the report", flush=True)
    report = write_report(cfg, train_cfg, result, metrics)
    print(f"done: open {report}")
    return report
