"""Numbers of each finished stage (one model's pass over the images), written to ``<out>/stages.json`` as soon as the
stage ends, so an interrupted evaluation keeps what it had computed (main process only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ether_diffusion.outputs import atomic_write
from eval.distributed import is_main

STAGES_NAME = "stages.json"


class StageLog:
    """``log(stage, numbers)`` adds one stage to ``<out>/stages.json`` (rewritten atomically each time)."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / STAGES_NAME
        self.stages: dict[str, Any] = {}

    def log(self, stage: str, numbers: Any) -> None:
        self.stages[stage] = numbers
        if not is_main():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.stages, indent=2, default=float)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
