"""The one-command demo: train -> generate -> evaluate -> report, on ``tiny`` (CPU, minutes) or on a real model.

With ``tiny`` the base model is random, so the images are noise and the metrics only prove the loop runs; the
report says so. With a real model (e.g. SD 1.5) the training values come unchanged from
``configs/dreambooth/<method>.yaml`` and the evaluation uses the real DINO / CLIP / LPIPS weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from ..data.images import load_rgb, resize_and_crop, scan_images
from ..names import TINY_RESOLUTION
from ..typed_config import ConfigError, load_config
from .demo_config import REPO, DemoConfig
from .dreambooth import DreamBoothConfig, train_dreambooth
from .eval_run import run_eval
from .generation import BASE, GenerateConfig, generate

TINY_NOTICE = ("**The `tiny` model is untrained (random weights): its images are noise and every number below is a "
               "smoke test of the train -> generate -> evaluate loop, not a result.** Run the same command with "
               "`--pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5` (or a local SD 1.5 "
               "folder) for the real experiment.")


def _train_config(cfg: DemoConfig, class_token: str) -> DreamBoothConfig:
    path = Path(cfg.train_config or REPO / "configs" / "dreambooth" / f"{cfg.method}.yaml")
    if not path.is_file():
        raise ConfigError(f"no training config {path}; pass --train_config or a --method with a file in configs/")
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


def _labelled_row(label: str, images: list[Image.Image], size: int) -> Image.Image:
    row = Image.new("RGB", (160 + size * len(images), size), "white")
    ImageDraw.Draw(row).text((6, size // 2 - 6), label, fill="black")
    for i, im in enumerate(images):
        row.paste(im.convert("RGB").resize((size, size)), (160 + i * size, 0))
    return row


def write_grid(real: list[Path], manifest: Path, path: Path, per_row: int = 6, size: int = 128) -> Path:
    """Real images, then one row per method: image 0 of the first ``per_row`` prompts."""
    rows = [_labelled_row("real", [resize_and_crop(load_rgb(p), size) for p in real[:per_row]], size)]
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for method in dict.fromkeys(e["method"] for e in entries):
        firsts = [e for e in entries if e["method"] == method and e["path"].endswith("_00.png")][:per_row]
        rows.append(_labelled_row(method, [Image.open(manifest.parent / e["path"]) for e in firsts], size))
    grid = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    for k, r in enumerate(rows):
        grid.paste(r, (0, k * size))
    grid.save(path)
    return path


def write_report(cfg: DemoConfig, train_cfg: DreamBoothConfig, result: dict, metrics: dict, grid: Path) -> Path:
    out = Path(cfg.output_dir)
    keys = ["dino", "clip_i", "clip_t", "lpips", "lpips_diversity"]
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731  (None: no pairs, e.g. one image per prompt)
    table = ["| method | images | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for method, r in metrics["results"].items():
        table.append(f"| {method} | {r['n_images']} | "
                     + " | ".join(fmt(r["means"].get(k)) for k in keys) + " |")
    if metrics.get("real_images"):
        real = metrics["real_images"]["means"]
        table.append("| real images | – | " + " | ".join(fmt(real.get(k)) for k in keys) + " |")
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
              "", "## Samples", "", f"![grid]({grid.name})", "",
              "First image of the first prompts of the evaluation set, per method; top row: the real photos.", "",
              "## Metrics (DreamBooth protocol: DINO, CLIP-I, CLIP-T up; LPIPS = distance to the real images)", "",
              *table, "", "Full tables per prompt: `eval/report.md`; every number: `eval/metrics.json`.", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def run_demo(cfg: DemoConfig) -> Path:
    """Run the whole loop; returns the path of REPORT.md."""
    from ..data.dreambooth import PROMPTS_FILE, read_prompts_file

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
    command = ["dreambooth", "--generated", str(manifest.parent),
               "--real", cfg.dreambooth_root, "--out", str(out / "eval"), "--clip-t-remove", cfg.unique_token]
    if cfg.tiny:  # random encoders; LPIPS at 64 px like the images
        command += ["--random-init", "--lpips-size", str(TINY_RESOLUTION)]
    run_eval(command)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())

    print("[4/4] writing the report", flush=True)
    grid = write_grid(scan_images(train_cfg.instance_data_dir, "instance"), manifest, out / "grid.png")
    report = write_report(cfg, train_cfg, result, metrics, grid)
    print(f"done: open {report}")
    return report
