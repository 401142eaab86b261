"""Fixtures for the DreamBooth tests: tiny-model configs, the shipped dog, small class folders, clean accelerate state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ether_diffusion.assets import DREAMBOOTH_ROOT as ASSETS

DOG = ASSETS / "dog"
REPO = Path(__file__).resolve().parents[2]


def reset_accelerate() -> None:
    """Each in-process run builds its own Accelerator; accelerate keeps process-wide singletons, so reset them."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def smooth_image(seed: int, size=(48, 48), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.BILINEAR).convert(mode)


@pytest.fixture(scope="session")
def class_dir(tmp_path_factory) -> Path:
    """Two ready-made class images, so prior-preservation runs need no generation."""
    folder = tmp_path_factory.mktemp("class_dog")
    for i in range(2):
        smooth_image(100 + i, (64, 64)).save(folder / f"class_{i:05d}.png")
    return folder


def tiny_config(out: Path, **overrides):
    """A 2-step DreamBooth config on the tiny model and the shipped dog."""
    from ether_diffusion.dreambooth.config import DreamBoothConfig

    values = dict(pretrained_model_name_or_path="tiny", instance_data_dir=str(DOG),
                  instance_prompt="a photo of qwe dog", output_dir=str(out), resolution=64, max_train_steps=2,
                  report_to="none", seed=0, mixed_precision="no", checkpointing_steps=1000)
    values.update(overrides)
    return DreamBoothConfig(**values)
