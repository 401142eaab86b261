"""`StudyConfig`: the options of robustness_study.py (light: no torch, so ``--help`` is immediate)."""

from __future__ import annotations

from dataclasses import dataclass

from ..assets import DREAMBOOTH_ROOT
from ..names import TINY_ID
from ..training.options import ADAPTER_METHODS
from ..typed_config import ConfigError, check_bound, check_fields, option


@dataclass
class StudyConfig:
    """Grid of (method, learning rate) DreamBooth runs with distances, energy, loss and metrics along the way."""

    pretrained_model_name_or_path: str = option(TINY_ID, "base model: 'tiny', a hub id or a local folder")
    methods: tuple[str, ...] = option(("ether", "ether_plus", "oft", "naive", "lora"), "methods to compare")
    learning_rates: tuple[float, ...] = option((1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "learning-rate grid")
    dreambooth_root: str = option(str(DREAMBOOTH_ROOT), "DreamBooth dataset root; default: the shipped dog subject")
    subject: str = option("dog", "subject folder under dreambooth_root")
    unique_token: str = option("qwe", "rare identifier")
    max_train_steps: int | None = option(None, "steps per run; default 12 for tiny, the config's for a real model")
    record_every: int | None = option(None, "measure every N steps; default max_train_steps / 4")
    evaluate: bool = option(False, "sample the 25 evaluation prompts and score them after each run")
    num_inference_steps: int | None = option(None, "sampler steps for evaluate; default 4 for tiny, 50 otherwise")
    output_dir: str = option("study_out", "runs, study.json and the plots")
    keep_runs: bool = option(False, "keep each run's checkpoints (large for real models)")

    def __post_init__(self) -> None:
        check_fields(self)
        bad = [m for m in self.methods if m not in ADAPTER_METHODS]
        if bad or not self.methods:
            raise ConfigError(f"methods {bad or '[]'}: choose from {', '.join(ADAPTER_METHODS)}")
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ConfigError(f"learning_rates must be positive, got {list(self.learning_rates)}")
        check_bound(self, ("max_train_steps", "record_every"), 1, optional=True)

    @property
    def tiny(self) -> bool:
        return self.pretrained_model_name_or_path == TINY_ID
