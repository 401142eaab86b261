"""Which base model to sample a trained folder with: the one given, else the one its ``train_config.yaml`` records.

Training writes the resolved config beside the weights (an adapter folder, or an S2I model folder), so a folder
trained on ``tiny`` or on a local SD copy is sampled on that same model without repeating the flag.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..typed_config import ConfigError
from .options import SD15_ID

TRAIN_CONFIG = "train_config.yaml"


def recorded_base_model(folder: str | Path) -> str | None:
    """``pretrained_model_name_or_path`` of ``folder/train_config.yaml``, if there is one."""
    path = Path(folder) / TRAIN_CONFIG
    if not path.is_file():
        return None
    try:
        value = (yaml.safe_load(path.read_text()) or {}).get("pretrained_model_name_or_path")
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML; pass --pretrained_model_name_or_path") from None
    return value if isinstance(value, str) and value else None


def resolve_base_model(given: str | None, folder: str | Path | None) -> str:
    """``given``, else the base model recorded in ``folder``, else SD 1.5."""
    if given:
        return given
    recorded = recorded_base_model(folder) if folder is not None else None
    if recorded is not None:
        print(f"base model {recorded!r} (recorded in {Path(folder) / TRAIN_CONFIG})", flush=True)
        return recorded
    return SD15_ID


def refuse_s2i_folder(folder: str | Path) -> None:
    """An S2I model folder (adapter + control encoder) is not a plain adapter: one line pointing to its sampler."""
    from ..models.control import ENCODER_CONFIG

    if (Path(folder) / ENCODER_CONFIG).is_file():
        raise ConfigError(f"{str(folder)!r} is an S2I model (adapter + control encoder); sample it from semantic maps "
                          f"with scripts/generate_s2i.py --model {folder}")
