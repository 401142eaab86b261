#!/usr/bin/env python
"""The whole loop in one command: train an adapter on a DreamBooth subject, sample, evaluate, write a report.

    python scripts/demo.py                       # tiny random model, CPU, a few minutes: a smoke test
    python scripts/demo.py --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5   # the real run

Options are `DemoConfig` fields (`--help`). Output: demo_out/REPORT.md (grid + metrics), train/, samples/, eval/.
Single process; for several GPUs run scripts/train_dreambooth.py and scripts/generate.py with `accelerate launch`.
"""

from __future__ import annotations

from ether_diffusion.dreambooth.demo_config import DemoConfig
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    return parse_config(DemoConfig, argv)


def main(cfg: DemoConfig):
    from ether_diffusion.dreambooth.demo import run_demo  # torch and diffusers: after the flags are read

    return run_demo(cfg)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
