"""Fixtures for the S2I tests: the shipped ADE20K val pairs, tiny-model configs, clean accelerate state."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADE20K = REPO / "tests" / "assets" / "ade20k"
CAPTIONS = ADE20K / "captions_oft_blip.jsonl"
CLASSES_JSON = ADE20K / "classes.json"
SCRIPTS = REPO / "scripts"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; accelerate keeps process-wide singletons, so reset them."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def ade_copy(tmp_path) -> Path:
    """A writable copy of the shipped ADEChallengeData2016 subset (validation split only)."""
    root = tmp_path / "ADEChallengeData2016"
    for kind in ("images", "annotations"):
        shutil.copytree(ADE20K / kind, root / kind)
    return root


def tiny_config(out: Path, **overrides):
    """A 2-step S2I config on the tiny model, training and validating on the 4 shipped val pairs."""
    from ether_diffusion.s2i.config import S2IConfig

    values = dict(pretrained_model_name_or_path="tiny", data_root=str(ADE20K), train_split="validation",
                  captions=str(CAPTIONS), validation_captions=str(CAPTIONS), output_dir=str(out), resolution=32,
                  train_batch_size=2, max_train_steps=2, learning_rate=1e-3, control_learning_rate=1e-3,
                  report_to="none", seed=0, mixed_precision="no", checkpointing_steps=1000,
                  num_validation_images=2, validation_inference_steps=2, validation_steps=1000)
    values.update(overrides)
    return S2IConfig(**values)
