"""Which base model to sample a trained folder with: the one given, else the one its ``train_config.yaml`` records.

Training writes the resolved config beside the weights (an adapter folder, or an S2I model folder), so a folder
trained on ``tiny`` or on a local SD copy is sampled on that same model without repeating the flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
    return resolve_shared_base_model(given, [] if folder is None else [folder])


def recorded_shared_base_model(folders: Iterable[str | Path]) -> tuple[str, Path] | None:
    """(base model, the file recording it) common to the ``folders`` that record one; None when none does. Folders
    that record different base models cannot share one pipeline: a `ConfigError` naming two of them."""
    found: dict[str, Path] = {}
    for folder in folders:
        recorded = recorded_base_model(folder)
        if recorded is not None:
            found.setdefault(recorded, Path(folder) / TRAIN_CONFIG)
    if len(found) > 1:
        (a, path_a), (b, path_b) = list(found.items())[:2]
        raise ConfigError(f"the adapters were trained on different base models ({a!r} in {path_a}, {b!r} in "
                          f"{path_b}); pass --pretrained_model_name_or_path")
    return next(iter(found.items()), None)


def resolve_shared_base_model(given: str | None, folders: Iterable[str | Path]) -> str:
    """``given``, else the base model the ``folders`` record (one for all), else SD 1.5."""
    if given:
        return given
    shared = recorded_shared_base_model(folders)
    if shared is not None:
        print(f"base model {shared[0]!r} (recorded in {shared[1]})", flush=True)
        return shared[0]
    return SD15_ID


def request_adapters(path: str | Path) -> list[str]:
    """The adapter folders named in a requests file (JSON lines), read leniently and without torch before the config
    is complete; lines that do not parse are left to `ether_diffusion.dreambooth.requests`, which reports them."""
    path = Path(path)
    if not path.is_file():
        return []
    folders = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        adapter = row.get("adapter") if isinstance(row, dict) else None
        if isinstance(adapter, str) and adapter.lower() != "none":
            folders.append(adapter)
    return folders


def refuse_s2i_folder(folder: str | Path) -> None:
    """An S2I model folder (adapter + control encoder) is not a plain adapter: one line pointing to its sampler."""
    from ..models.control import ENCODER_CONFIG

    if (Path(folder) / ENCODER_CONFIG).is_file():
        raise ConfigError(f"{str(folder)!r} is an S2I model (adapter + control encoder); sample it from semantic maps "
                          f"with scripts/generate_s2i.py --model {folder}")
