#!/usr/bin/env python
"""Images from ADE20K semantic maps with a trained S2I model, plus manifest.jsonl for `python -m eval s2i`.

    accelerate launch scripts/generate_s2i.py --model runs/s2i/ether/model \
        --annotations /data/ADEChallengeData2016/annotations/validation \
        --captions /data/oft/ADE20K/val/prompt_val_blip_full.json --output_dir samples/s2i

Every option is an `S2IGenerateConfig` field (`--help`); `--config file.yaml` sets them, flags override it.
"""

from __future__ import annotations

from ether_diffusion.s2i.config import S2IGenerateConfig
from ether_diffusion.s2i.generate import generate_s2i
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config


def parse_args(argv: list[str] | None = None) -> S2IGenerateConfig:
    return parse_config(S2IGenerateConfig, argv)


def main(cfg: S2IGenerateConfig):
    manifest = generate_s2i(cfg)
    print(f"wrote {manifest}")
    return manifest


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
