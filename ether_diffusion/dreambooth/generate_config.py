"""`GenerateConfig`: the options of generate.py (light: no torch, so ``--help`` is immediate), and the sizes it takes
on the ``tiny`` model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..assets import DREAMBOOTH_PROMPTS_FILE
from ..names import PROMPTS_FILE
from ..training.options import SD15_ID
from ..typed_config import ConfigError, check_bound, check_fields, check_resolution, option

BASE = "base"
TINY_GENERATE: dict[str, Any] = dict(num_inference_steps=4, num_images_per_prompt=1, batch_size=25)


@dataclass
class GenerateConfig:
    """Generate images (+ manifest.jsonl) from a base model and an optional adapter."""

    pretrained_model_name_or_path: str | None = option(
        None, f"base model: hub id, local diffusers folder, or 'tiny'; default: the one recorded in the adapter's "
              f"train_config.yaml, else {SD15_ID}")
    revision: str | None = option(None, "hub revision of the base model")
    variant: str | None = option(None, "weights variant, e.g. 'fp16'")
    adapter: str | None = option(None, "adapter folder (train_dreambooth's <output_dir>/adapter); none = base model")
    method_name: str | None = option(None, "method label in the manifest; default: the adapter's method, or 'base'")
    prompts: tuple[str, ...] = option((), "prompts to sample (or use prompts_file / subject)")
    prompts_file: str | None = option(None, "text file, one prompt per line")
    subject: str | None = option(None, "DreamBooth subject (folder name): sample its 25 evaluation prompts")
    requests_file: str | None = option(None, "JSONL, one {prompt, adapter[, seed, subject, ...]} per line: batches mix "
                                         "adapters, one per sample (see ether_diffusion/dreambooth/requests.py)")
    prompts_and_classes: str = option(str(DREAMBOOTH_PROMPTS_FILE),
                                      f"DreamBooth's {PROMPTS_FILE}; default: the copy shipped with the package")
    unique_token: str = option("sks", "the rare identifier of the subject in the prompts")
    class_token: str | None = option(None, "class noun of the subject; default: from prompts_and_classes")
    num_images_per_prompt: int = option(4, "images per prompt")
    seed: int = option(0, "base seed: image j of prompt i uses seed + i * num_images_per_prompt + j")
    batch_size: int = option(4, "images per pipeline call")
    num_inference_steps: int = option(50, "sampler steps")
    guidance_scale: float = option(7.5, "classifier-free guidance scale")
    resolution: int | None = option(None, "image side in pixels; default: the model's")
    scheduler: Literal["default", "ddim", "dpm_solver", "euler"] = option("default", "sampler; default: the model's")
    merge: bool = option(True, "fold the adapter into the weights (base-model speed); false runs the adapter layers")
    attention: Literal["sdpa", "xformers"] = option("sdpa", "attention kernel of the unmerged adapter")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = option(None, "weights dtype; default fp16 on GPU, fp32 on CPU")
    output_dir: str = option("samples", "images go to <output_dir>/<method>/<subject or 'prompts'>/, plus manifest.jsonl")
    skip_existing: bool = option(True, "keep images already on disk (an interrupted run continues)")

    def __post_init__(self) -> None:
        check_fields(self)
        sources = [bool(self.prompts), self.prompts_file is not None, self.subject is not None,
                   self.requests_file is not None]
        if sum(sources) != 1:
            raise ConfigError("give exactly one of --prompts, --prompts_file, --subject (DreamBooth evaluation set) "
                              "or --requests_file")
        if self.requests_file is not None and self.adapter is not None:
            raise ConfigError("--requests_file names an adapter per row; drop --adapter")
        check_bound(self, ("num_images_per_prompt", "batch_size", "num_inference_steps"), 1)
        check_resolution(self.resolution)
