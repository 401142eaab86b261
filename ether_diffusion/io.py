"""save / load adapters: ``adapter_model.safetensors`` + ``adapter_config.json`` (config, layer names and shapes).

A saved adapter describes itself. Loading validates everything (method, block count, every layer name and shape,
every tensor) before touching the model, so a mismatch leaves the model as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from . import __version__
from . import functional as Fn
from .config import EtherConfig
from .layer import check_adapter_name
from .model import adapter_state_dict, get_state, load_adapter_state_dict, prepare_adapter, target_layers
from .outputs import atomic_write

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT = "ether-diffusion-adapter"
FORMAT_VERSION = 1


class AdapterMismatchError(ValueError):
    """A saved adapter does not fit the model it is loaded into."""


def save_ether(model: nn.Module, path: str | os.PathLike, adapter_name: str | None = None) -> Path:
    """Write the (active or named) adapter of ``model`` to the folder ``path``; returns the folder.

    An unknown ``adapter_name`` is refused before anything is written."""
    state = get_state(model)
    tensors = {k: v.float().cpu().contiguous() for k, v in adapter_state_dict(model, adapter_name).items()}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "model_class": type(model).__name__,
        "config": state.config.to_dict(),
        "layers": {k: {"out_features": f, "in_features": d} for k, (f, d) in state.layers.items()},
    }
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return folder


def read_adapter(path: str | os.PathLike) -> tuple[EtherConfig, dict, dict[str, torch.Tensor]]:
    """(config, metadata, tensors) of a saved adapter folder, with one clear error for a missing or foreign one."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {str(folder)!r} does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{str(folder)!r} has no {name}: it is not an ether-diffusion adapter folder "
                                    "(save one with save_ether)")
    meta = json.loads((folder / CONFIG_NAME).read_text())
    if meta.get("format") != FORMAT:
        raise AdapterMismatchError(f"{folder / CONFIG_NAME} is not an ether-diffusion adapter config "
                                   f"(format={meta.get('format')!r})")
    return EtherConfig.from_dict(meta["config"]), meta, load_file(str(folder / WEIGHTS_NAME))


def _expected_tensors(config: EtherConfig, layers: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for layer, (f, d) in layers.items():
        sides = [("in", d)] + ([("out", f)] if config.method in Fn.OUTPUT_SIDE_METHODS else [])
        for side, dim in sides:
            for k, shape in Fn.param_shapes(config.method, dim, config.n_blocks).items():
                out[f"{layer}.{side}.{k}"] = shape
    return out


def _check_fits(model: nn.Module, config: EtherConfig, meta: dict, tensors: dict, where: str) -> dict:
    state = get_state(model, required=False)
    if state is not None:
        if state.merged:
            raise AdapterMismatchError(f"cannot load {where}: the model's adapter is merged; unmerge_ether first")
        for key in ("method", "n_blocks"):
            mine, theirs = getattr(state.config, key), getattr(config, key)
            if mine != theirs:
                raise AdapterMismatchError(f"cannot load {where}: it has {key}={theirs!r} but the model's adapter "
                                           f"has {key}={mine!r}")
    try:
        layers = target_layers(model, config)
    except ValueError as e:
        raise AdapterMismatchError(f"cannot load {where} into this {type(model).__name__}: {e}") from None
    saved = {k: (v["out_features"], v["in_features"]) for k, v in meta["layers"].items()}
    for name in list(saved) + [n for n in layers if n not in saved]:
        if name not in layers:
            raise AdapterMismatchError(f"cannot load {where}: layer {name} is not in this {type(model).__name__}")
        if name not in saved:
            raise AdapterMismatchError(f"cannot load {where}: it has no weights for layer {name} of this model")
        if saved[name] != layers[name]:
            raise AdapterMismatchError(
                f"cannot load {where}: layer {name} was saved with (out, in) = {saved[name]} but this model has "
                f"{layers[name]}")
    if state is not None and set(state.layers) != set(layers):
        raise AdapterMismatchError(f"cannot load {where}: it targets {config.target_modules}, which selects other "
                                   f"layers than the model's adapter ({state.config.target_modules})")
    for key, shape in _expected_tensors(config, layers).items():
        if key not in tensors:
            raise AdapterMismatchError(f"cannot load {where}: tensor {key} is missing from {WEIGHTS_NAME}")
        if tuple(tensors[key].shape) != shape:
            raise AdapterMismatchError(f"cannot load {where}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                                       f"expected {shape}")
    return layers


@torch.no_grad()
def load_ether(model: nn.Module, path: str | os.PathLike, adapter_name: str | None = None) -> nn.Module:
    """Load a saved adapter into ``model``: applies ETHER with the saved config if the model has none yet.

    With ``adapter_name``, the adapter is added under that name next to those already loaded (same method and
    block count) and made active; without it, it replaces the active adapter's values.
    """
    if adapter_name is not None:
        check_adapter_name(adapter_name)
    config, meta, tensors = read_adapter(path)
    _check_fits(model, config, meta, tensors, where=f"adapter {str(path)!r}")
    prepare_adapter(model, config, adapter_name)
    load_adapter_state_dict(model, tensors)
    return model
