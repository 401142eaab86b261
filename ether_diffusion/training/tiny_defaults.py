"""Sizes that fit the ``tiny`` random model: with ``--pretrained_model_name_or_path tiny`` a script replaces the
dataclass default or YAML value of these fields unless a command-line flag sets it (a 512 px / 200 class image YAML
would keep the tiny model busy for many minutes on a CPU). Each application names its sizes beside its config
(`dreambooth.config.TINY_DREAMBOOTH`, `dreambooth.generate_config.TINY_GENERATE`, `s2i.config.TINY_S2I`, ...)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..names import TINY_ID


def with_tiny_defaults(cfg: Any, given: set[str], values: dict[str, Any], base: str | None = None) -> Any:
    """``cfg`` with ``values`` for the fields not in ``given``, when its base model (``base``, default: the config's)
    is ``tiny``; says what changed."""
    if (base or getattr(cfg, "pretrained_model_name_or_path", None)) != TINY_ID:
        return cfg
    changes = {k: v for k, v in values.items() if k not in given and getattr(cfg, k) != v}
    if changes:
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"tiny model: {shown} (a flag sets any of them)", flush=True)
    return replace(cfg, **changes)
