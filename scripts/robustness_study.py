#!/usr/bin/env python
"""Learning-rate robustness and distance study (ETHER paper, Sec. 4): a grid of DreamBooth runs, plots and JSON.

    python scripts/robustness_study.py                                     # tiny model on a CPU, minutes
    python scripts/robustness_study.py --methods ether lora --learning_rates 1e-4 1e-2 --evaluate true
    python scripts/robustness_study.py --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --max_train_steps 400 --record_every 100 --evaluate true                # SD 1.5 on a GPU
"""

from ether_diffusion.study.config import StudyConfig
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config


def parse_args(argv=None) -> StudyConfig:
    return parse_config(StudyConfig, argv)


def main(cfg: StudyConfig) -> None:
    from ether_diffusion.study.robustness import run_study  # torch and diffusers: after the flags are read

    path = run_study(cfg)
    print(f"done: {path} and the plots beside it")


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
