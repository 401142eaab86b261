#!/usr/bin/env python
"""Images from ADE20K semantic maps with a trained S2I model, plus manifest.jsonl for `python -m eval s2i`.

    accelerate launch scripts/generate_s2i.py --model runs/s2i/ether/model \
        --annotations /data/ADEChallengeData2016/annotations/validation \
        --captions /data/oft/ADE20K/val/prompt_val_blip_full.json --output_dir samples/s2i

Every option is an `S2IGenerateConfig` field (`--help`); `--config file.yaml` sets them, flags override it. A model
trained on `tiny` samples with tiny sizes (a few steps, its training resolution) unless a flag sets them.
"""

from __future__ import annotations

from ether_diffusion.s2i.config import TINY_S2I_GENERATE, S2IGenerateConfig
from ether_diffusion.training.base_model import recorded_base_model
from ether_diffusion.training.cli import run_cli
from ether_diffusion.training.tiny_defaults import with_tiny_defaults
from ether_diffusion.typed_config import command_line_keys, parse_config


def parse_args(argv: list[str] | None = None) -> S2IGenerateConfig:
    cfg = parse_config(S2IGenerateConfig, argv)
    base = cfg.pretrained_model_name_or_path or recorded_base_model(cfg.model)
    return with_tiny_defaults(cfg, command_line_keys(S2IGenerateConfig, argv), TINY_S2I_GENERATE, base)


def main(cfg: S2IGenerateConfig):
    from ether_diffusion.s2i.generate import generate_s2i  # torch and diffusers: after the flags are read

    manifest = generate_s2i(cfg)
    print(f"wrote {manifest}")
    return manifest


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
