"""`train_dreambooth(cfg)`: DreamBooth subject training with any adapter of `ADAPTER_METHODS` (options:
`DreamBoothConfig`, config.py).

The base UNet, VAE and text encoder stay frozen (fp16/bf16 under mixed precision); only the adapter trains (fp32).
The instance and class prompts are fixed, so their text embeddings are computed once; with deterministic crops the
VAE posteriors of the images are too (`latent_cache`), and on one GPU each step replays from a CUDA graph.
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
from ..training.latent_cache import RowTable, encode_rows, want_cache
from ..training.loop import train_loop
from ..training.loss import Shard, denoising_loss, draw_noise, encode_latents, encode_prompts
from ..training.optim import build_optimizer
from ..training.run_folder import check_run_folder, start_run_folder
from ..training.setup import (Parked, finish_training, freeze_base, loader_workers, prepare_training,
                              training_noise_scheduler, use_cuda_graph)
from ..training.validation import run_validation
from .class_images import ensure_class_images
from .config import ADAPTER_DIR, CONFIG_FILE, DreamBoothConfig


def train_dreambooth(cfg: DreamBoothConfig, on_step=None) -> dict:
    """Train, save ``<output_dir>/adapter`` (+ ``train_config.yaml``); returns paths, the final step and its losses.

    ``on_step(step)`` is called after every optimiser step (``benchmarks/train_loop.py`` times the loop with it).
    """
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
    dataset.cached = cfg.cache_latents != "off" and want_cache(
        cfg.cache_latents, dataset.fixed_crops(), "random crops of non-square images change from epoch to epoch "
        "(pass --center_crop, or square images)")
    graph = use_cuda_graph(accelerator, cfg)

    noise_scheduler = training_noise_scheduler(pipe, cfg.prediction_type)
    freeze_base(pipe, device, dtype)
    unet, vae = pipe.unet, pipe.vae
    params = add_adapter_from_config(unet, cfg)  # fp32, on the UNet's device
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    instance_emb = encode_prompts(pipe, cfg.instance_prompt, device)  # (1, 77, C)
    class_emb = encode_prompts(pipe, cfg.class_prompt, device) if cfg.with_prior_preservation else None
    table = None
    if dataset.cached:  # posteriors of every image (and its mirror image), encoded once
        per_step = cfg.train_batch_size * (2 if cfg.with_prior_preservation else 1)  # what a step would encode
        rows = encode_rows(vae, dataset.cache_images(), len(dataset.sizes) * dataset.flips, per_step,
                           show=accelerator.is_local_main_process)
        table = RowTable(rows, device)
    parked = Parked([pipe.text_encoder] + ([vae] if table is not None else []), device)  # the step never reads them

    optimizer = build_optimizer(params, cfg, accelerator.num_processes, capturable=graph)
    unet, optimizer, loader, lr_scheduler, plan, generator = prepare_training(
        accelerator, cfg, unet, optimizer, dataset, collate, seed, loader_workers(accelerator, cfg, dataset.cached))
    timesteps, scaling = noise_scheduler.config.num_train_timesteps, vae.config.scaling_factor

    def make_inputs(batch) -> dict:
        # this process's rows of the global batch: instance images, then class images (`Shard`)
        shard = Shard(accelerator.process_index, accelerator.num_processes, 2 if batch["n_prior"] else 1)
        if table is not None:
            latents = table.sample_latents(batch["rows"], generator, scaling, shard)  # (B', 4, R/8, R/8)
        else:
            latents = encode_latents(vae, batch["pixels"].to(device, dtype), generator, shard)
        noise, t = draw_noise(latents, timesteps, generator, shard)
        return {"latents": latents, "noise": noise, "t": t, "n_prior": batch["n_prior"]}

    def loss_fn(inputs):
        latents, n_prior = inputs["latents"], inputs["n_prior"]
        n_inst = len(latents) - n_prior  # instance images first, then class images
        emb = instance_emb.expand(n_inst, -1, -1)
        if n_prior:
            emb = torch.cat([emb, class_emb.expand(n_prior, -1, -1)])  # (B', 77, C)
        per_sample = denoising_loss(unet, noise_scheduler, latents, inputs["noise"], inputs["t"], emb)  # (B',)
        if not n_prior:
            return per_sample.mean(), {}
        instance, prior = per_sample[:n_inst].mean(), per_sample[n_inst:].mean()
        return instance + cfg.prior_loss_weight * prior, {"instance_loss": instance, "prior_loss": prior}

    validate = lambda step: run_validation(accelerator, pipe, cfg, step, cfg.resolution, cfg.resolution,  # noqa: E731
                                           parked)
    step, last = train_loop(accelerator, cfg, unet, optimizer, lr_scheduler, loader, params, make_inputs, loss_fn,
                            plan, generator, on_validation=validate, cuda_graph=graph, on_step=on_step)

    adapter_dir = Path(cfg.output_dir) / ADAPTER_DIR
    finish_training(accelerator, cfg, step, adapter_dir, CONFIG_FILE,
                    lambda folder: save_adapter(accelerator.unwrap_model(unet), cfg.method, folder), validate)
    return {"output_dir": Path(cfg.output_dir), "adapter_dir": adapter_dir, "step": step, **last}
