"""ether-diffusion: ETHER / ETHER+ hyperplane-reflection finetuning for diffusers models.

Names are imported on first use (PEP 562), so light modules such as ``ether_diffusion.typed_config`` (used by the
eval CLI) load without torch. ``ether_diffusion.patch``, ``.multi``, ... are reachable as attributes too.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EtherConfig": "config", "ConfigError": "typed_config", "EtherError": "patch", "AdapterMismatchError": "io",
    "apply_ether": "patch", "ether_parameters": "patch", "save_ether": "io", "load_ether": "io",
    "merge_ether": "patch", "unmerge_ether": "patch", "remove_ether": "patch",
    "export_lora": "export", "adapter_names": "multi", "set_active_adapter": "multi", "set_mixed_form": "multi",
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
