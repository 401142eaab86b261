#!/usr/bin/env python
"""Images from a base model + one adapter (or none), with manifest.jsonl for the eval package.

    # the DreamBooth evaluation set of a subject (25 prompts x N images), merged adapter
    accelerate launch scripts/generate.py --adapter runs/dog-ether/adapter --subject dog --output_dir samples
    # your own prompts, base model only
    python scripts/generate.py --prompts "a photo of a dog" "a dog in the snow" --output_dir samples

Every option is a `GenerateConfig` field (`--help`); `--config file.yaml` sets them, flags override it.
"""

from __future__ import annotations

from ether_diffusion.dreambooth.generate_config import TINY_GENERATE, GenerateConfig
from ether_diffusion.training.base_model import recorded_shared_base_model, request_adapters
from ether_diffusion.training.cli import run_cli
from ether_diffusion.training.tiny_defaults import with_tiny_defaults
from ether_diffusion.typed_config import command_line_keys, parse_config


def parse_args(argv: list[str] | None = None) -> GenerateConfig:
    cfg = parse_config(GenerateConfig, argv)
    folders = request_adapters(cfg.requests_file) if cfg.requests_file else [cfg.adapter] * bool(cfg.adapter)
    shared = recorded_shared_base_model(folders)
    base = cfg.pretrained_model_name_or_path or (shared[0] if shared else None)
    return with_tiny_defaults(cfg, command_line_keys(GenerateConfig, argv), TINY_GENERATE, base)


def main(cfg: GenerateConfig):
    from ether_diffusion.dreambooth.generate import generate  # torch and diffusers: after the flags are read

    manifest = generate(cfg)
    print(f"wrote {manifest}")
    return manifest


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
