"""`train_s2i(cfg)`: semantic-map-to-image training on ADE20K with the shared loop of `ether_diffusion.training`.

VAE, text encoder and UNet stay frozen (fp16/bf16 under mixed precision); the adapter (unless ``none``) and the
control encoder train in fp32. The UNet and the encoder are one prepared module (`ControlledUNet`), so DDP,
gradient accumulation and the checkpoints (trainable parameters only) cover both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from diffusers import DDIMScheduler

from ..data.ade20k import ADE20KDataset, SkippedSampleWarning, collate, color_ids, scan_ade20k
from ..models.loading import load_pipeline
from ..training.accelerator import build_accelerator, weight_dtype
from ..training.loop import train_loop
from ..training.latent_cache import want_cache
from ..training.loss import Shard, denoising_loss, draw_noise, encode_latents, encode_prompts
from ..training.optim import build_optimizer, effective_learning_rate
from ..training.run_folder import check_run_folder, start_run_folder
from ..training.setup import (Parked, finish_training, freeze_base, loader_workers, prepare_training,
                              training_noise_scheduler, use_cuda_graph)
from .cache import build_table, default_cache_dir
from .config import S2IConfig
from .model import build_s2i_model, save_s2i_model
from .sampling import run_s2i_validation

MODEL_DIR = "model"
CONFIG_FILE = "train_config.yaml"


def _samples(cfg: S2IConfig, accelerator):
    """(training samples, validation samples); skip warnings are shown by the main process only."""
    with warnings.catch_warnings():
        if not accelerator.is_main_process:
            warnings.simplefilter("ignore", SkippedSampleWarning)
        train = scan_ade20k(cfg.data_root, cfg.train_split, cfg.captions, cfg.prompt)
        val = []
        if cfg.validation_split is not None:
            prompt = cfg.validation_prompt if cfg.validation_prompt is not None else (cfg.prompt or "")
            val = scan_ade20k(cfg.data_root, cfg.validation_split, cfg.validation_captions,
                              None if cfg.validation_captions else prompt)[: cfg.num_validation_images]
    return train, val


def _param_groups(cfg: S2IConfig, adapter_params, encoder_params, num_processes: int) -> list[dict]:
    """The adapter at ``learning_rate``, the encoder at ``control_learning_rate``; ``scale_lr`` scales both."""
    factor = effective_learning_rate(cfg, num_processes) / cfg.learning_rate
    control_lr = cfg.control_learning_rate if cfg.control_learning_rate is not None else cfg.learning_rate
    groups = [{"params": encoder_params, "lr": control_lr * factor}]
    return ([{"params": adapter_params}] if adapter_params else []) + groups


def train_s2i(cfg: S2IConfig, on_step=None) -> dict:
    """Train; save ``<output_dir>/model`` (adapter + control encoder + train_config.yaml). Returns paths, the final
    step and its loss. ``on_step(step)`` is called after every optimiser step."""
    check_run_folder(cfg, MODEL_DIR)  # a bad output path fails before anything loads
    accelerator = build_accelerator(cfg)
    train_samples, val_samples = _samples(cfg, accelerator)  # bad data fails before any model loads
    start_run_folder(accelerator, cfg, MODEL_DIR)
    dtype, device = weight_dtype(accelerator), accelerator.device
    seed = cfg.seed if cfg.seed is not None else 0
    dataset = ADE20KDataset(train_samples, cfg.resolution, cfg.crop, cfg.random_flip, seed)
    dataset.cached = want_cache(cfg.cache_latents, dataset.fixed_crops(), "crop is 'random'")
    graph = use_cuda_graph(accelerator, cfg)

    accelerator.print(f"loading base model {cfg.pretrained_model_name_or_path!r}", flush=True)
    pipe = load_pipeline(cfg.pretrained_model_name_or_path, revision=cfg.revision, variant=cfg.variant)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # validation samples with DDIM, as OFT
    noise_scheduler = training_noise_scheduler(pipe, cfg.prediction_type)
    freeze_base(pipe, device, dtype)
    unet, vae = pipe.unet, pipe.vae
    controlled, adapter_params, encoder_params = build_s2i_model(unet, cfg, pipe.vae_scale_factor)
    params = adapter_params + encoder_params  # fp32
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    rows = texts = None
    if dataset.cached:  # posteriors, maps and text embeddings of every sample, from (or into) the cache folder
        with accelerator.main_process_first():
            rows, texts = build_table(dataset, pipe, device, cfg.latent_cache_dir or default_cache_dir(),
                                      max(1, cfg.train_batch_size // dataset.flips),  # what a step would encode
                                      show=accelerator.is_local_main_process)
    parked = Parked([vae, pipe.text_encoder] if rows is not None else [], device)  # cached: the step never reads them

    optimizer = build_optimizer(_param_groups(cfg, adapter_params, encoder_params, accelerator.num_processes), cfg,
                                accelerator.num_processes, capturable=graph)
    model, optimizer, loader, lr_scheduler, plan, generator = prepare_training(
        accelerator, cfg, controlled, optimizer, dataset, collate, seed, loader_workers(accelerator, cfg, dataset.cached))
    timesteps, scaling = noise_scheduler.config.num_train_timesteps, vae.config.scaling_factor

    shard = Shard(accelerator.process_index, accelerator.num_processes)  # this process's rows of the global batch

    def make_inputs(batch) -> dict:
        if rows is not None:
            latents = rows.sample_latents(batch["rows"], generator, scaling, shard)  # (B, 4, R/f, R/f)
            control = color_ids(rows.gather(batch["rows"], ("ids",))["ids"])  # (B, 3, R, R) in [0, 1]
            text = texts.gather([r // dataset.flips for r in batch["rows"]])["text"]  # (B, 77, C)
        else:
            latents = encode_latents(vae, batch["pixels"].to(device, dtype), generator, shard)
            text = encode_prompts(pipe, batch["prompts"], device)
            control = batch["condition"].to(device)  # fp32 into the fp32 encoder
        noise, t = draw_noise(latents, timesteps, generator, shard)
        return {"latents": latents, "noise": noise, "t": t, "text": text, "control": control}

    def loss_fn(inputs):
        return denoising_loss(model, noise_scheduler, inputs["latents"], inputs["noise"], inputs["t"], inputs["text"],
                              control=inputs["control"]).mean(), {}

    plain = accelerator.unwrap_model(model)
    validate = lambda step: run_s2i_validation(accelerator, pipe, plain, val_samples, cfg, step, parked)  # noqa: E731
    step, last = train_loop(accelerator, cfg, model, optimizer, lr_scheduler, loader, params, make_inputs, loss_fn,
                            plan, generator, on_validation=validate, cuda_graph=graph, on_step=on_step)

    model_dir = Path(cfg.output_dir) / MODEL_DIR
    finish_training(accelerator, cfg, step, model_dir, CONFIG_FILE,
                    lambda folder: save_s2i_model(plain, cfg.method, folder), validate)
    return {"output_dir": Path(cfg.output_dir), "model_dir": model_dir, "step": step, **last}
