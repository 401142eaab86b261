"""Score a folder of DreamBooth samples with the eval package, called as a library: the same ``metrics.json``,
``report.md`` and ``grid.png`` as ``python -m eval dreambooth --generated ... --real ... --out ...``.

The eval package never imports training code; here the application imports eval (`eval.cli.run`), which reads the
samples' ``manifest.jsonl`` and the real images from disk. A user error there (a missing folder or model, a bad
manifest row) comes back as one `ConfigError` line starting with "evaluation:", so the calling script reports it
like its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.cli import run, user_errors
from eval.config import DreamBoothEvalConfig

from ..names import TINY_RESOLUTION
from ..typed_config import ConfigError
from ..user_errors import one_line


def evaluate_samples(generated: str | Path, real: str | Path, out: str | Path, unique_token: str,
                     tiny: bool = False) -> dict:
    """DINO, CLIP-I, CLIP-T and LPIPS of the images in ``generated`` against the subjects' photos under ``real``
    (the DreamBooth dataset root), written to ``out``; returns what ``out/metrics.json`` holds.

    ``unique_token`` is removed from the prompts before CLIP-T. ``tiny``: random encoders and LPIPS at the tiny
    model's size (numbers that only show the loop runs; the report says so)."""
    options = dict(generated=str(generated), real=str(real), out=str(out), clip_t_remove=unique_token)
    if tiny:
        options.update(random_init=True, lpips_size=TINY_RESOLUTION)
    try:
        run("dreambooth", DreamBoothEvalConfig(**options))
    except user_errors() as e:
        raise ConfigError(one_line(e, prefix="evaluation: ")) from e
    return json.loads((Path(out) / "metrics.json").read_text())
