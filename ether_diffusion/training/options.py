"""`TrainConfig`: the fields every training script shares (model, adapter, optimiser, precision, logging, checkpoints).

A script's config subclasses it and adds its data fields (see `DreamBoothConfig`). Flag names follow diffusers'
example scripts (`--learning_rate`, `--train_batch_size`, ...) so their users find what they expect.

The adapter's fields are one group, `AdapterOptions`, that `TrainConfig` extends: they stay flat flags and YAML keys
(``--method``, ``--n_blocks``, ...), and building the config checks them as the adapter will use them, before any
model loads: an ETHER-family method as an `EtherConfig` (so a typo in ``target_modules`` is one line at once), LoRA
with its own checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..names import METHODS, PROJECTIONS
from ..typed_config import ConfigError, check_bound, check_fields, option

if TYPE_CHECKING:
    from ..config import EtherConfig

LORA = "lora"
ADAPTER_METHODS = (*METHODS, LORA)
SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass
class AdapterOptions:
    """The adapter a run trains: one of ether, ether_plus, oft, naive (an `EtherConfig`) or PEFT LoRA."""

    method: Literal["ether", "ether_plus", "oft", "naive", "lora"] = option(
        "ether", "adapter: " + ", ".join(ADAPTER_METHODS))
    n_blocks: int = option(4, "diagonal blocks per transform (ether, ether_plus, oft, naive)")
    target_modules: tuple[str, ...] = option(PROJECTIONS, "attention projections to adapt (suffix match)")
    init_seed: int | None = option(None, "seed of the adapter's random init (ether / ether_plus); default: --seed")
    lora_rank: int = option(4, "LoRA rank (method=lora)")
    lora_alpha: float | None = option(None, "LoRA alpha; default: lora_rank (scale 1)")
    attention: Literal["sdpa", "xformers"] = option("sdpa", "attention kernel: PyTorch SDPA, or xformers when installed")

    def __post_init__(self) -> None:
        check_fields(self)
        check_bound(self, ("n_blocks", "lora_rank"), 1)
        if self.method == LORA:
            if any(not any(t.endswith(p) for p in PROJECTIONS) for t in self.target_modules):
                raise ConfigError(f"target_modules {list(self.target_modules)} must end in one of {PROJECTIONS}")
        elif self.method in METHODS:
            self.ether_config()  # EtherConfig checks method, n_blocks and target_modules

    def ether_config(self, seed: int | None = None) -> EtherConfig:
        """The `EtherConfig` of an ETHER-family method; ``init_seed`` unless set is ``seed`` (the run's)."""
        from ..config import EtherConfig  # torch: only once a config is built, so --help stays immediate

        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} has no EtherConfig; the ETHER family is {', '.join(METHODS)}")
        return EtherConfig(method=self.method, n_blocks=self.n_blocks, target_modules=self.target_modules,
                           init_seed=self.init_seed if self.init_seed is not None else seed)


@dataclass
class TrainConfig(AdapterOptions):
    """Shared training options."""

    # ---- model
    pretrained_model_name_or_path: str = option(SD15_ID, "base model: hub id, local diffusers folder, or 'tiny' (random "
                                                     "CPU model for smoke tests)")
    revision: str | None = option(None, "hub revision of the base model")
    variant: str | None = option(None, "weights variant of the base model, e.g. 'fp16'")
    prediction_type: Literal["epsilon", "v_prediction"] | None = option(
        None, "training target; default: the base model's scheduler config (SD 1.5: epsilon, SD 2.x 768: v_prediction)")
    # ---- output and logging
    output_dir: str = option("runs/dreambooth", "where the adapter, config, checkpoints, logs and validation images go")
    logging_dir: str = option("logs", "tracker folder, relative to output_dir")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = option(
        "tensorboard", "trackers: tensorboard, wandb, all (every installed one) or none")
    tracker_project_name: str = option("ether-diffusion", "project name in the trackers")
    # ---- optimisation
    learning_rate: float = option(1e-3, "initial learning rate (after warm-up), before scale_lr")
    scale_lr: bool = option(False, "multiply the learning rate by processes x batch size x accumulation steps")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                          "polynomial"] = option("constant", "diffusers.optimization scheduler")
    lr_warmup_steps: int = option(0, "warm-up steps of the scheduler")
    lr_num_cycles: int = option(1, "restarts of cosine_with_restarts")
    lr_power: float = option(1.0, "power of the polynomial scheduler")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    use_8bit_adam: bool = option(False, "bitsandbytes 8-bit AdamW (pip install bitsandbytes; CUDA only)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 turns clipping off)")
    # ---- loop
    train_batch_size: int = option(1, "batch size per device (prior preservation doubles it with class images)")
    max_train_steps: int | None = option(None, "optimiser steps; overrides num_train_epochs when set")
    num_train_epochs: int = option(1, "epochs, when max_train_steps is not set")
    gradient_accumulation_steps: int = option(1, "batches accumulated per optimiser step")
    gradient_checkpointing: bool = option(False, "recompute UNet activations in the backward pass (saves memory)")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = option(
        None, "frozen weights in fp16/bf16 (adapter parameters stay fp32); default: accelerate's config")
    allow_tf32: bool = option(False, "TF32 matmuls on Ampere+ GPUs")
    seed: int | None = option(None, "seed of data order, noise and validation images; a fixed seed makes a run "
                                "(and its resume) reproducible")
    dataloader_num_workers: int | None = option(
        None, "data-loading worker processes (persistent, pinned memory); default: none when latents are cached "
              "(nothing to load per step) or on CPU, else min(4, CPU cores - 1)")
    cache_latents: Literal["auto", "on", "off"] = option(
        "auto", "encode every training image with the VAE once (both orientations with random_flip) and sample the "
                "latents from the stored posteriors; 'auto': on when crops are deterministic (not random crops of "
                "non-square images)")
    cuda_graph: Literal["auto", "on", "off"] = option(
        "auto", "replay each optimiser step from a CUDA graph (no Python per step); 'auto': on for one CUDA process "
                "without gradient accumulation, fp16 loss scaling, 8-bit Adam or gradient checkpointing")
    logging_steps: int = option(10, "log the loss (mean over these steps) every N optimiser steps; reading it "
                                  "waits for the GPU")
    # ---- validation
    validation_prompt: str | None = option(None, "prompt of the validation images; none turns validation off")
    num_validation_images: int = option(4, "validation images per validation")
    validation_steps: int = option(100, "validate every N optimiser steps (and at the end)")
    validation_inference_steps: int = option(25, "sampler steps of the validation images")
    validation_guidance_scale: float = option(7.5, "classifier-free guidance of the validation images")
    # ---- checkpoints
    checkpointing_steps: int = option(500, "save a resumable checkpoint every N optimiser steps")
    checkpoints_total_limit: int | None = option(None, "keep at most this many checkpoints (oldest deleted)")
    resume_from_checkpoint: str | None = option(None, "'latest' (last complete checkpoint in output_dir, or a fresh "
                                                  "start if none) or a checkpoint folder")
    overwrite_output_dir: bool = option(False, "start over in an output_dir that holds a previous run: its weights, "
                                               "checkpoints and validation images are deleted first (without this "
                                               "flag or resume_from_checkpoint such a folder is refused)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bound(self, ("train_batch_size", "num_train_epochs", "gradient_accumulation_steps",
                           "num_validation_images", "validation_steps", "validation_inference_steps",
                           "checkpointing_steps", "logging_steps"), 1)
        check_bound(self, ("dataloader_num_workers",), 0, optional=True)
        check_bound(self, ("max_train_steps", "checkpoints_total_limit"), 1, optional=True)
        check_bound(self, ("learning_rate", "adam_epsilon"), 0, strict=True)
        check_bound(self, ("lr_warmup_steps", "adam_weight_decay", "max_grad_norm"), 0)
        if not self.pretrained_model_name_or_path:
            raise ConfigError("pretrained_model_name_or_path is empty; pass a hub id, a local folder or 'tiny'")
        if self.overwrite_output_dir and self.resume_from_checkpoint is not None:
            raise ConfigError("pass either --resume_from_checkpoint (continue the run in output_dir) or "
                              "--overwrite_output_dir (replace it), not both")

    @property
    def adapter_seed(self) -> int | None:
        return self.init_seed if self.init_seed is not None else self.seed
