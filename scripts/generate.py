#!/usr/bin/env python
"""Images from a base model + one adapter (or none), with manifest.jsonl for the eval package.

    # the DreamBooth evaluation set of a subject (25 prompts x N images), merged adapter
    accelerate launch scripts/generate.py --adapter runs/dog-ether/adapter --subject dog --output_dir samples
    # your own prompts, base model only
    python scripts/generate.py --prompts "a photo of a dog" "a dog in the snow" --output_dir samples

Every option is a `GenerateConfig` field (`--help`); `--config file.yaml` sets them, flags override it.
"""

from __future__ import annotations

from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import parse_config
from ether_diffusion.training.generation import GenerateConfig, generate


def parse_args(argv: list[str] | None = None) -> GenerateConfig:
    return parse_config(GenerateConfig, argv)


def main(cfg: GenerateConfig):
    manifest = generate(cfg)
    print(f"wrote {manifest}")
    return manifest


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
