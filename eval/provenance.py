"""What produced a metrics.json: package versions, mode, and whether the numbers can sit next to a paper's."""

from __future__ import annotations

import datetime
import importlib.metadata as md
from typing import Any

from eval.random_init import RANDOM_INIT_WARNING

PACKAGES = ("torch", "torchvision", "transformers", "lpips", "torch-fidelity", "torchmetrics", "accelerate", "pillow")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def provenance(random_init: bool) -> dict[str, Any]:
    from eval.distributed import state

    return {
        "comparable_to_papers": not random_init,
        "warning": RANDOM_INIT_WARNING if random_init else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "processes": state().num_processes,
        "versions": {p: _version(p) for p in PACKAGES},
    }
