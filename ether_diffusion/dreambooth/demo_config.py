"""`DemoConfig`: the options of demo.py (light: no torch, so ``--help`` is immediate)."""

from __future__ import annotations

from dataclasses import dataclass

from ..assets import DREAMBOOTH_ROOT
from ..names import TINY_ID
from ..typed_config import check_fields, option


@dataclass
class DemoConfig:
    """Train an adapter on one DreamBooth subject, sample its 25 evaluation prompts, score them, write a report."""

    pretrained_model_name_or_path: str = option(TINY_ID, "base model: 'tiny' (CPU smoke run), a hub id or a local folder")
    method: str = option("ether", "ether, ether_plus, oft, naive or lora (trained with the shipped "
                                  "ether_diffusion/dreambooth/configs/<method>.yaml)")
    train_config: str | None = option(None, "training YAML; default: the shipped configs/<method>.yaml")
    dreambooth_root: str = option(str(DREAMBOOTH_ROOT), "DreamBooth dataset root (one folder per subject, "
                                                        "prompts_and_classes.txt); default: the shipped dog subject")
    subject: str = option("dog", "subject folder under dreambooth_root")
    unique_token: str = option("qwe", "rare identifier (OFT's released scripts use 'qwe')")
    output_dir: str = option("demo_out", "everything goes here; REPORT.md is the page to open (a rerun continues "
                                         "the training there from its last checkpoint)")
    max_train_steps: int | None = option(None, "default: 30 for tiny, the config's for a real model")
    num_images_per_prompt: int | None = option(None, "default: 2 for tiny, 4 for a real model")
    num_inference_steps: int | None = option(None, "default: 4 for tiny, 50 for a real model")
    baseline: bool = option(True, "also sample the base model without adapter, as a reference row")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def tiny(self) -> bool:
        return self.pretrained_model_name_or_path == TINY_ID
