"""Files shipped inside the package (package data, listed in pyproject.toml; sources and licences in ATTRIBUTION.md
and dreambooth/ATTRIBUTION.md), so an installed wheel finds them as a checkout does.

Standard library only: the eval package reads the ADE20K classes from here without loading torch.

    ade20k_classes.json                 the 150 ADE20K classes: id, train_id, name, colour (the one palette)
    dreambooth/prompts_and_classes.txt  DreamBooth's subject classes and 25 evaluation prompts per subject
    dreambooth/dog/                     5 photos of the ``dog`` subject: the demo's and the study's default data
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..names import PROMPTS_FILE

ASSETS = Path(__file__).resolve().parent
ADE20K_CLASSES_FILE = ASSETS / "ade20k_classes.json"
DREAMBOOTH_ROOT = ASSETS / "dreambooth"  # laid out like the DreamBooth dataset: one folder per subject
DREAMBOOTH_PROMPTS_FILE = DREAMBOOTH_ROOT / PROMPTS_FILE


@functools.lru_cache(maxsize=None)
def ade20k_classes() -> tuple[dict, ...]:
    """The rows of ``ade20k_classes.json`` in train-id order: ``{"id", "train_id", "name", "color", ...}``."""
    return tuple(json.loads(ADE20K_CLASSES_FILE.read_text()))
