"""`train_dreambooth(cfg)`: DreamBooth subject training with any adapter of `ADAPTER_METHODS` (options:
`DreamBoothConfig`, config.py).

The base UNet, VAE and text encoder stay frozen (fp16/bf16 under mixed precision); only the adapter trains (fp32).
The instance and class prompts are fixed, so their text embeddings are computed once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..data.dreambooth import DreamBoothDataset, collate
from ..data.images import SkippedImageWarning, scan_images
from ..models.loading import load_pipeline
from ..outputs import check_writable
from ..training.accelerator import build_accelerator, weight_dtype
from ..training.adapters import add_adapter_from_config, save_adapter
from ..training.loop import train_loop
from ..training.loss import diffusion_loss, encode_latents, encode_prompts
from ..training.optim import build_optimizer
from ..training.run_folder import check_run_folder, start_run_folder
from ..training.setup import finish_training, freeze_base, prepare_training, training_noise_scheduler
from ..training.validation import run_validation
from .class_images import ensure_class_images
from .config import ADAPTER_DIR, CONFIG_FILE, DreamBoothConfig


def train_dreambooth(cfg: DreamBoothConfig) -> dict:
    """Train, save ``<output_dir>/adapter`` (+ ``train_config.yaml``); returns paths and the final step."""
    scan_images(cfg.instance_data_dir, "instance")  # fail on a bad folder or output path before loading any model
    check_run_folder(cfg, ADAPTER_DIR)
    if cfg.with_prior_preservation and cfg.class_data_dir is not None:
        check_writable(cfg.class_data_dir, "class_data_dir")
    accelerator = build_accelerator(cfg)
    start_run_folder(accelerator, cfg, ADAPTER_DIR)
    dtype, device = weight_dtype(accelerator), accelerator.device
    seed = cfg.seed if cfg.seed is not None else 0
    accelerator.print(f"loading base model {cfg.pretrained_model_name_or_path!r}", flush=True)
    pipe = load_pipeline(cfg.pretrained_model_name_or_path, revision=cfg.revision, variant=cfg.variant)

    class_dir = None
    if cfg.with_prior_preservation:
        class_dir = ensure_class_images(
            accelerator, pipe, cfg.class_data_dir or Path(cfg.output_dir) / "class_images", cfg.class_prompt,
            cfg.num_class_images, cfg.resolution, cfg.sample_batch_size, cfg.class_inference_steps, seed, dtype)
    with warnings.catch_warnings():  # skipped files were named above
        warnings.simplefilter("ignore", SkippedImageWarning)
        dataset = DreamBoothDataset(cfg.instance_data_dir, cfg.resolution, cfg.center_crop, cfg.random_flip,
                                    class_dir, seed, cfg.num_class_images)

    noise_scheduler = training_noise_scheduler(pipe, cfg.prediction_type)
    freeze_base(pipe, device, dtype)
    unet, vae = pipe.unet, pipe.vae
    params = add_adapter_from_config(unet, cfg)  # fp32, on the UNet's device
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    instance_emb = encode_prompts(pipe, cfg.instance_prompt, device)
    class_emb = encode_prompts(pipe, cfg.class_prompt, device) if cfg.with_prior_preservation else None

    optimizer = build_optimizer(params, cfg, accelerator.num_processes)
    unet, optimizer, loader, lr_scheduler, plan, generator = prepare_training(
        accelerator, cfg, unet, optimizer, dataset, collate, seed)

    last = {}  # the final step's losses, returned to the caller

    def compute_loss(batch):
        is_prior = batch["is_prior"].to(device)
        latents = encode_latents(vae, batch["pixels"].to(device, dtype), generator)  # (B', 4, R/8, R/8)
        n_prior = int(is_prior.sum())
        emb = instance_emb.expand(len(is_prior) - n_prior, -1, -1)
        if n_prior:
            emb = torch.cat([emb, class_emb.expand(n_prior, -1, -1)])  # (B', 77, C)
        per_sample = diffusion_loss(unet, noise_scheduler, latents, emb, generator)  # (B',)
        if not n_prior:
            loss, logs = per_sample.mean(), {}
        else:
            instance, prior = per_sample[~is_prior].mean(), per_sample[is_prior].mean()
            loss, logs = instance + cfg.prior_loss_weight * prior, {"instance_loss": instance.item(),
                                                                    "prior_loss": prior.item()}
        last.update(loss=loss.item(), **logs)
        return loss, logs

    validate = lambda step: run_validation(accelerator, pipe, cfg, step, cfg.resolution, cfg.resolution)  # noqa: E731
    step = train_loop(accelerator, cfg, unet, optimizer, lr_scheduler, loader, params, compute_loss, plan,
                      generator, on_validation=validate)

    adapter_dir = Path(cfg.output_dir) / ADAPTER_DIR
    finish_training(accelerator, cfg, step, adapter_dir, CONFIG_FILE,
                    lambda folder: save_adapter(accelerator.unwrap_model(unet), cfg.method, folder), validate)
    return {"output_dir": Path(cfg.output_dir), "adapter_dir": adapter_dir, "step": step, **last}
