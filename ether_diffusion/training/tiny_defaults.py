"""Sizes that fit the ``tiny`` random model: with ``--pretrained_model_name_or_path tiny`` a script replaces the
dataclass default or YAML value of these fields unless a command-line flag sets it (a 512 px / 200 class image YAML
would keep the tiny model busy for many minutes on a CPU)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..names import TINY_ID, TINY_RESOLUTION

TINY_DREAMBOOTH: dict[str, Any] = dict(
    resolution=TINY_RESOLUTION, num_class_images=4, sample_batch_size=4, class_inference_steps=2, max_train_steps=20,
    num_validation_images=2, validation_inference_steps=4, validation_steps=10, checkpointing_steps=10,
    mixed_precision="no")
TINY_GENERATE: dict[str, Any] = dict(num_inference_steps=4, num_images_per_prompt=1, batch_size=25)
TINY_S2I: dict[str, Any] = dict(
    resolution=TINY_RESOLUTION, train_batch_size=2, max_train_steps=4, num_validation_images=2,
    validation_inference_steps=4, validation_steps=2, checkpointing_steps=2, mixed_precision="no")
# resolution None: the one the S2I model was trained at (its train_config.yaml)
TINY_S2I_GENERATE: dict[str, Any] = dict(num_inference_steps=4, resolution=None, batch_size=4)


def with_tiny_defaults(cfg: Any, given: set[str], values: dict[str, Any], base: str | None = None) -> Any:
    """``cfg`` with ``values`` for the fields not in ``given``, when its base model (``base``, default: the config's)
    is ``tiny``; says what changed."""
    if (base or getattr(cfg, "pretrained_model_name_or_path", None)) != TINY_ID:
        return cfg
    changes = {k: v for k, v in values.items() if k not in given and getattr(cfg, k) != v}
    if changes:
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"tiny model: {shown} (a flag sets any of them)", flush=True)
    return replace(cfg, **changes)
