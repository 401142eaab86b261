"""The adapter configuration: one typed dataclass, validated on construction, saved beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .functional import METHODS
from .typed_config import ConfigError
from .names import PROJECTIONS  # noqa: F401  (re-exported: the projections a processor computes)

# the projections an attention processor computes itself, named relative to diffusers' `Attention`


@dataclass(frozen=True)
class EtherConfig:
    method: str = field(
        default="ether",
        metadata={"help": f"The transform: one of {METHODS}. 'ether' is a Householder reflection on the input side; "
                          "'ether_plus' relaxes it and adds an output-side transform; 'oft' (Cayley) and 'naive' "
                          "(I + R) are the paper's comparison baselines."},
    )
    n_blocks: int = field(
        default=4,
        metadata={"help": "Number of diagonal blocks each dimension is split into; must divide every targeted "
                          "in_features (and out_features for ether_plus)."},
    )
    target_modules: tuple[str, ...] = field(
        default=PROJECTIONS,
        metadata={"help": "Projections to adapt, matched as a suffix of '<attention module name>.<projection>', "
                          "e.g. 'to_q' (every attention) or 'attn2.to_k' (cross-attention keys only). Each must end "
                          f"in one of {PROJECTIONS}."},
    )
    init_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the random initial vectors (ether, ether_plus); None uses torch's global RNG."},
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is unknown; choose one of {', '.join(METHODS)}")
        if isinstance(self.n_blocks, bool) or not isinstance(self.n_blocks, int) or self.n_blocks < 1:
            raise ConfigError(f"n_blocks must be a positive integer, got {self.n_blocks!r}")
        targets = (self.target_modules,) if isinstance(self.target_modules, str) else self.target_modules
        try:
            targets = tuple(targets)
        except TypeError:
            raise ConfigError(f"target_modules must be a list of names, got {self.target_modules!r}") from None
        if not targets or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"target_modules must be a non-empty list of names, got {self.target_modules!r}")
        for t in targets:
            if not any(t == p or t.endswith("." + p) for p in PROJECTIONS):
                raise ConfigError(f"target_modules entry {t!r} does not end in one of {PROJECTIONS}")
        object.__setattr__(self, "target_modules", targets)
        if self.init_seed is not None and (isinstance(self.init_seed, bool) or not isinstance(self.init_seed, int)):
            raise ConfigError(f"init_seed must be an integer or null, got {self.init_seed!r}")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EtherConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown EtherConfig key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "EtherConfig":
        return cls.from_dict(json.loads(text))

    def matches(self, attn_name: str, projection: str) -> bool:
        """Whether ``<attn_name>.<projection>`` is targeted."""
        full = f"{attn_name}.{projection}"
        return any(t.endswith(projection) and (full == t or full.endswith("." + t)) for t in self.target_modules)
