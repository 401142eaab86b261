#!/usr/bin/env python
"""DreamBooth training of an ETHER / ETHER+ / OFT / naive / LoRA adapter on Stable Diffusion.

    accelerate launch scripts/train_dreambooth.py --config configs/dreambooth/ether.yaml \
        --instance_data_dir tests/assets/dreambooth/dog --instance_prompt "a photo of sks dog" \
        --class_prompt "a photo of dog" --output_dir runs/dog-ether

Every option is a `DreamBoothConfig` field (`--help` lists them); the YAML file sets them, flags override it.
Writes <output_dir>/adapter/ (weights + train_config.yaml), checkpoint-<step>/, validation/ and logs/.
"""

from __future__ import annotations

from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config
from ether_diffusion.training.dreambooth import DreamBoothConfig, train_dreambooth


def parse_args(argv: list[str] | None = None) -> DreamBoothConfig:
    return parse_config(DreamBoothConfig, argv)


def main(cfg: DreamBoothConfig) -> dict:
    return train_dreambooth(cfg)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
