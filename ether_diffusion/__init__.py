"""ether-diffusion: ETHER / ETHER+ hyperplane-reflection finetuning for diffusers models.

Names are imported on first use (PEP 562), so light modules such as ``ether_diffusion.typed_config`` (used by the
eval CLI) load without torch. The modules are reachable as attributes too:

    config.py       EtherConfig
    functional.py   the pure math: reflections on activations (per layer and per sample), folds, LoRA factors
    layer.py        the attention processor, the per-projection adapter, the per-sample form
    model.py        every model-level verb: apply / remove, merge / unmerge, parameters, values by name, adapter
                    names and the active one, the mixed form, the projections' impl
    io.py           save / load; export.py: LoRA files
    kernels/        the Triton fast paths (a leaf: imports nothing of the package)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EtherConfig": "config", "ConfigError": "typed_config", "EtherError": "state", "AdapterMismatchError": "io",
    "apply_ether": "model", "ether_parameters": "model", "save_ether": "io", "load_ether": "io",
    "merge_ether": "model", "unmerge_ether": "model", "remove_ether": "model",
    "export_lora": "export", "adapter_names": "model", "set_active_adapter": "model", "set_mixed_form": "model",
    "set_impl": "model",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
