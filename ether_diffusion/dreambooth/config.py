"""`DreamBoothConfig`: the options of train_dreambooth.py (light: no torch, so ``--help`` is immediate), the sizes
it takes on the ``tiny`` model, and the shipped per-method configs (``configs/<method>.yaml``, package data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..names import TINY_RESOLUTION
from ..training.options import TrainConfig
from ..typed_config import ConfigError, check_bound, check_resolution, option

ADAPTER_DIR = "adapter"
CONFIG_FILE = "train_config.yaml"
CONFIGS = Path(__file__).resolve().parent / "configs"  # the paper's comparison, one YAML per method
TINY_DREAMBOOTH: dict[str, Any] = dict(
    resolution=TINY_RESOLUTION, num_class_images=4, sample_batch_size=4, class_inference_steps=2, max_train_steps=20,
    num_validation_images=2, validation_inference_steps=4, validation_steps=10, checkpointing_steps=10,
    mixed_precision="no")


def shipped_config(method: str) -> Path:
    """``configs/<method>.yaml``: the paper's DreamBooth hyperparameters for ``method``."""
    return CONFIGS / f"{method}.yaml"


@dataclass
class DreamBoothConfig(TrainConfig):
    """DreamBooth training of an ETHER / ETHER+ / OFT / naive / LoRA adapter on a few images of one subject."""

    instance_data_dir: str = option("", "folder of the subject's images (required)")
    instance_prompt: str = option("", "prompt with the rare identifier, e.g. 'a photo of sks dog' (required)")
    with_prior_preservation: bool = option(False, "add the prior-preservation loss on class images")
    class_data_dir: str | None = option(None, "folder of class images; missing ones are generated and kept there "
                                          "(default: <output_dir>/class_images)")
    class_prompt: str | None = option(None, "prompt of the class images, e.g. 'a photo of dog' (prior preservation)")
    prior_loss_weight: float = option(1.0, "weight of the prior-preservation loss")
    num_class_images: int = option(100, "class images wanted for prior preservation")
    sample_batch_size: int = option(4, "batch size when generating class images")
    class_inference_steps: int = option(50, "sampler steps when generating class images")
    resolution: int = option(512, "training resolution (images are resized and cropped to it)")
    center_crop: bool = option(False, "centre crop instead of a random crop")
    random_flip: bool = option(False, "random horizontal flips")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instance_data_dir:
            raise ConfigError("instance_data_dir is required: pass --instance_data_dir with the subject's images")
        if not self.instance_prompt:
            raise ConfigError("instance_prompt is required, e.g. --instance_prompt 'a photo of sks dog'")
        if self.with_prior_preservation and not self.class_prompt:
            raise ConfigError("with_prior_preservation needs class_prompt, e.g. --class_prompt 'a photo of dog'")
        check_bound(self, ("num_class_images", "sample_batch_size", "class_inference_steps"), 1)
        check_resolution(self.resolution)
        check_bound(self, ("prior_loss_weight",), 0)
