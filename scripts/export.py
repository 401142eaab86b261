#!/usr/bin/env python
"""An adapter where a LoRA goes: one LoRA file (diffusers or kohya keys) or a merged diffusers model folder.

    # ETHER / ETHER+ exactly as a rank-n / rank-4n LoRA, for pipe.load_lora_weights or ComfyUI / AUTOMATIC1111
    python scripts/export.py --adapter runs/dog-ether/adapter --to lora-diffusers --output dog-ether.safetensors
    python scripts/export.py --adapter runs/dog-ether/adapter --to lora-kohya --output dog-ether-kohya.safetensors
    # the base pipeline with the adapter folded in, loadable with StableDiffusionPipeline.from_pretrained
    python scripts/export.py --adapter runs/dog-ether/adapter --to merged --output dog-ether-sd15 --dtype fp16

Every option is an `ExportConfig` field (`--help`); `--config file.yaml` sets them, flags override it. The base model
is the one the adapter's train_config.yaml records unless --pretrained_model_name_or_path names it.
"""

from __future__ import annotations

from ether_diffusion.dreambooth.export_config import ExportConfig
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config


def parse_args(argv: list[str] | None = None) -> ExportConfig:
    return parse_config(ExportConfig, argv)


def main(cfg: ExportConfig):
    from ether_diffusion.dreambooth.export_run import export  # torch and diffusers: after the flags are read

    path = export(cfg)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
