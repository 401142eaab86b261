#!/usr/bin/env python
"""Semantic-map-to-image training on ADE20K: a control encoder plus an ETHER / ETHER+ / OFT / naive / LoRA adapter
(or none) on a frozen Stable Diffusion UNet.

    accelerate launch scripts/train_s2i.py --config configs/s2i/ether.yaml \
        --data_root /data/ADEChallengeData2016 --captions /data/oft/ADE20K/train/prompt_train_blip.json

Every option is an `S2IConfig` field (`--help` lists them); the YAML file sets them, flags override it. With
`--pretrained_model_name_or_path tiny` the sizes not set by a flag are tiny ones (64 px, a few steps).
Writes <output_dir>/model/ (adapter + control encoder + train_config.yaml), checkpoint-<step>/, validation/, logs/.
"""

from __future__ import annotations

from ether_diffusion.s2i.config import TINY_S2I, S2IConfig
from ether_diffusion.training.cli import run_cli
from ether_diffusion.training.tiny_defaults import with_tiny_defaults
from ether_diffusion.typed_config import command_line_keys, parse_config


def parse_args(argv: list[str] | None = None) -> S2IConfig:
    cfg = parse_config(S2IConfig, argv)
    return with_tiny_defaults(cfg, command_line_keys(S2IConfig, argv), TINY_S2I)


def main(cfg: S2IConfig) -> dict:
    from ether_diffusion.s2i.train import train_s2i  # torch and diffusers: after the flags are read

    return train_s2i(cfg)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
