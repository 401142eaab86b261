"""The paper's learning-rate robustness and distance study (Sec. 4, Figs. 4-7) as a tool.

`StudyConfig` (light, `study.config`) and `run_study` (torch, `study.robustness`, imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"StudyConfig": "config", "run_study": "robustness"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
