#!/usr/bin/env python
"""DreamBooth training of an ETHER / ETHER+ / OFT / naive / LoRA adapter on Stable Diffusion.

    accelerate launch scripts/train_dreambooth.py --config ether_diffusion/dreambooth/configs/ether.yaml \
        --instance_data_dir ether_diffusion/assets/dreambooth/dog --instance_prompt "a photo of sks dog" \
        --class_prompt "a photo of dog" --output_dir runs/dog-ether

Every option is a `DreamBoothConfig` field (`--help` lists them); the YAML file sets them, flags override it.
Writes <output_dir>/adapter/ (weights + train_config.yaml), checkpoint-<step>/, validation/ and logs/.
"""

from __future__ import annotations

from ether_diffusion.dreambooth.config import TINY_DREAMBOOTH, DreamBoothConfig
from ether_diffusion.training.cli import run_cli
from ether_diffusion.training.tiny_defaults import with_tiny_defaults
from ether_diffusion.typed_config import command_line_keys, parse_config


def parse_args(argv: list[str] | None = None) -> DreamBoothConfig:
    cfg = parse_config(DreamBoothConfig, argv)
    return with_tiny_defaults(cfg, command_line_keys(DreamBoothConfig, argv), TINY_DREAMBOOTH)


def main(cfg: DreamBoothConfig) -> dict:
    from ether_diffusion.dreambooth.train import train_dreambooth  # torch and diffusers: after the flags are read

    return train_dreambooth(cfg)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
