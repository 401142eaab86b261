"""`S2IConfig` (training) and `S2IGenerateConfig` (sampling from maps): the typed configs of the S2I scripts, and the
sizes each takes on the ``tiny`` model.

Both go through the shared config system (`ether_diffusion.typed_config`): defaults < ``--config`` YAML < flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..names import HINT_CHANNELS, TINY_RESOLUTION
from ..training.options import SD15_ID, TrainConfig
from ..typed_config import ConfigError, check_bound, check_fields, check_resolution, option

S2I_METHODS = ("ether", "ether_plus", "oft", "naive", "lora", "none")
NO_ADAPTER = "none"  # the paper's "encoder only" baseline: the UNet stays frozen, only the control encoder trains
TINY_S2I: dict[str, Any] = dict(
    resolution=TINY_RESOLUTION, train_batch_size=2, max_train_steps=4, num_validation_images=2,
    validation_inference_steps=4, validation_steps=2, checkpointing_steps=2, mixed_precision="no")
# resolution None: the one the S2I model was trained at (its train_config.yaml)
TINY_S2I_GENERATE: dict[str, Any] = dict(num_inference_steps=4, resolution=None, batch_size=4)


def _check_prompt_source(captions: str | None, prompt: str | None, what: str) -> None:
    if captions is None and prompt is None:
        raise ConfigError(f"{what}: pass --captions FILE (captions keyed by image name) or --prompt TEXT (one prompt "
                          "for every map; '' for none)")
    if captions is not None and prompt is not None:
        raise ConfigError(f"{what}: pass --captions or --prompt, not both")


@dataclass
class S2IConfig(TrainConfig):
    """Semantic-map-to-image training: an adapter (or none) on the frozen UNet plus a control encoder, on ADE20K."""

    method: Literal["ether", "ether_plus", "oft", "naive", "lora", "none"] = option(
        "ether", "adapter on the frozen UNet: " + ", ".join(S2I_METHODS) + " ('none': train the control encoder only)")
    output_dir: str = option("runs/s2i", "where model/, checkpoints, logs and validation grids go")
    # ---- data
    data_root: str = option("", "ADEChallengeData2016 folder (images/<split>, annotations/<split>) (required)")
    train_split: str = option("training", "split folder of the training pairs")
    captions: str | None = option(None, "JSON / JSONL captions of the training split keyed by image name (or OFT's "
                                    "prompt_train_blip.json)")
    prompt: str | None = option(None, "one fixed prompt for every training image, when there is no caption file")
    resolution: int = option(512, "side of the square training images and maps, in pixels")
    crop: Literal["none", "center", "random"] = option(
        "none", "'none' resizes photo and map to the square (keeps pixel correspondence with the annotation); "
                "'center' / 'random' keep the aspect ratio and crop")
    random_flip: bool = option(False, "random horizontal flips (photo and map together)")
    latent_cache_dir: str | None = option(
        None, "folder of the cached latents, maps and text embeddings (cache_latents): one file per sample, keyed by "
              "its files, caption, resolution, crop and the model, so runs share it and a change rebuilds only what "
              "changed; default: $ETHER_DIFFUSION_CACHE/latents or ~/.cache/ether-diffusion/latents")
    # ---- control encoder
    control_channels: tuple[int, ...] | None = option(
        None, f"widths of the control encoder, one stride-2 conv between consecutive ones; default: ControlNet's "
              f"{list(HINT_CHANNELS)} for a VAE that downsamples 8x (fewer for smaller VAEs)")
    control_learning_rate: float | None = option(None, "learning rate of the control encoder; default: learning_rate")
    # ---- validation (the first num_validation_images maps of validation_split: map | generated grid)
    validation_split: str | None = option("validation", "split whose first maps are rendered during training; null "
                                                    "turns validation off")
    validation_captions: str | None = option(None, "captions of validation_split; default: validation_prompt")
    validation_prompt: str | None = option(None, "fixed prompt of the validation images when validation_captions is "
                                             "not set (default: prompt, else '')")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data_root:
            raise ConfigError("data_root is required: pass --data_root with the ADEChallengeData2016 folder")
        _check_prompt_source(self.captions, self.prompt, "training prompts")
        check_resolution(self.resolution)
        if self.control_channels is not None and (not self.control_channels or min(self.control_channels) < 1):
            raise ConfigError(f"control_channels must be positive widths, got {list(self.control_channels)}")
        check_bound(self, ("control_learning_rate",), 0, strict=True, optional=True)


@dataclass
class S2IGenerateConfig:
    """Images from semantic maps with a trained S2I model (adapter + control encoder), plus manifest.jsonl."""

    pretrained_model_name_or_path: str | None = option(
        None, f"base model: hub id, local diffusers folder, or 'tiny'; default: the one recorded in the model's "
              f"train_config.yaml, else {SD15_ID}")
    revision: str | None = option(None, "hub revision of the base model")
    variant: str | None = option(None, "weights variant, e.g. 'fp16'")
    model: str = option("", "folder written by train_s2i.py (its output_dir/model: adapter + control encoder) (required)")
    annotations: str = option("", "folder of ADE20K annotation PNGs, e.g. ADEChallengeData2016/annotations/validation "
                              "(required)")
    captions: str | None = option(None, "JSON / JSONL captions keyed by image name (or OFT's prompt_val_blip_full.json)")
    prompt: str | None = option(None, "one fixed prompt for every map, when there is no caption file")
    limit: int | None = option(None, "use only the first N maps (sorted by name)")
    method_name: str | None = option(None, "method label in the manifest; default: the model's method")
    num_images_per_map: int = option(1, "images per map")
    seed: int = option(0, "image j of map i uses seed + i * num_images_per_map + j (CPU generator)")
    batch_size: int = option(4, "maps per pipeline call")
    num_inference_steps: int = option(50, "sampler steps (OFT: DDIM 50)")
    guidance_scale: float = option(9.0, "classifier-free guidance; the map conditions both branches (OFT: 9.0)")
    scheduler: Literal["default", "ddim", "dpm_solver", "euler"] = option("ddim", "sampler (OFT: DDIM, eta 0)")
    resolution: int | None = option(None, "side of the square images; default: the training resolution (model/train_config.yaml), "
                                             "else the base model's (512 on SD 1.5)")
    merge: bool = option(True, "fold the adapter into the weights (base-model speed)")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = option(None, "weights dtype; default fp16 on GPU, fp32 on CPU")
    output_dir: str = option("samples/s2i", "images go to <output_dir>/<method>/, plus <output_dir>/manifest.jsonl")
    skip_existing: bool = option(True, "keep images already on disk (an interrupted run continues)")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.model:
            raise ConfigError("model is required: pass --model with train_s2i.py's <output_dir>/model folder")
        if not self.annotations:
            raise ConfigError("annotations is required: pass --annotations with a folder of annotation PNGs")
        _check_prompt_source(self.captions, self.prompt, "generation prompts")
        check_bound(self, ("num_images_per_map", "batch_size", "num_inference_steps"), 1)
        check_bound(self, ("limit",), 1, optional=True)
        check_resolution(self.resolution)
