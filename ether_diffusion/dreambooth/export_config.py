"""`ExportConfig`: the options of export.py (light: no torch, so ``--help`` is immediate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..typed_config import ConfigError, check_bound, check_fields, option
from ..training.options import SD15_ID

MERGED = "merged"
LORA_TARGETS = {"lora-diffusers": "diffusers", "lora-kohya": "kohya"}  # --to -> ether_diffusion.export format
LORA_SUFFIX = ".safetensors"


@dataclass
class ExportConfig:
    """Write an adapter as one LoRA file (diffusers or kohya keys) or as a merged diffusers model folder."""

    adapter: str | None = option(None, "required: the adapter folder (train_dreambooth's <output_dir>/adapter)")
    pretrained_model_name_or_path: str | None = option(
        None, f"base model the adapter was trained on: hub id, local diffusers folder, or 'tiny'; default: the one "
              f"recorded in the adapter's train_config.yaml, else {SD15_ID}")
    revision: str | None = option(None, "hub revision of the base model")
    variant: str | None = option(None, "weights variant of the base model, e.g. 'fp16'")
    to: Literal["lora-diffusers", "lora-kohya", "merged"] | None = option(
        None, "required: lora-diffusers (pipe.load_lora_weights), lora-kohya (ComfyUI, AUTOMATIC1111, kohya's "
              "scripts) or merged (a diffusers pipeline folder with the adapter folded in)")
    output: str | None = option(
        None, f"required: the {LORA_SUFFIX} file (lora-*) or the pipeline folder (merged) to write")
    dtype: Literal["fp16", "fp32"] = option("fp32", "dtype of the written tensors (computed in float64 / float32)")
    rank: int | None = option(None, "LoRA rank; required for oft and naive (a truncated SVD); ether and ether_plus are "
                                    "exact at rank n_blocks and 4 x n_blocks without it")
    overwrite: bool = option(False, "replace an existing output")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("adapter", "to", "output"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required (see --help)")
        check_bound(self, ("rank",), 1, optional=True)
        if self.to in LORA_TARGETS and not self.output.endswith(LORA_SUFFIX):
            raise ConfigError(f"--to {self.to} writes one file: --output must end in {LORA_SUFFIX}, got "
                              f"{self.output!r}")
