#!/usr/bin/env python
"""Semantic-map-to-image training on ADE20K: a control encoder plus an ETHER / ETHER+ / OFT / naive / LoRA adapter
(or none) on a frozen Stable Diffusion UNet.

    accelerate launch scripts/train_s2i.py --config configs/s2i/ether.yaml \
        --data_root /data/ADEChallengeData2016 --captions /data/oft/ADE20K/train/prompt_train_blip.json

Every option is an `S2IConfig` field (`--help` lists them); the YAML file sets them, flags override it.
Writes <output_dir>/model/ (adapter + control encoder + train_config.yaml), checkpoint-<step>/, validation/, logs/.
"""

from __future__ import annotations

from ether_diffusion.s2i.config import S2IConfig
from ether_diffusion.s2i.train import train_s2i
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config


def parse_args(argv: list[str] | None = None) -> S2IConfig:
    return parse_config(S2IConfig, argv)


def main(cfg: S2IConfig) -> dict:
    return train_s2i(cfg)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
