"""`train_s2i(cfg)`: semantic-map-to-image training on ADE20K with the shared loop of `ether_diffusion.training`.

VAE, text encoder and UNet stay frozen (fp16/bf16 under mixed precision); the adapter (unless ``none``) and the
control encoder train in fp32. The UNet and the encoder are one prepared module (`ControlledUNet`), so DDP,
gradient accumulation and the checkpoints (trainable parameters only) cover both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from diffusers import DDIMScheduler

from ..data.ade20k import ADE20KDataset, SkippedSampleWarning, collate, scan_ade20k
from ..models.loading import load_pipeline
from ..training.accelerator import build_accelerator, weight_dtype
from ..training.loop import train_loop
from ..training.loss import diffusion_loss, encode_latents, encode_prompts
from ..training.optim import build_optimizer, effective_learning_rate
from ..training.run_folder import check_run_folder, start_run_folder
from ..training.setup import finish_training, freeze_base, prepare_training, training_noise_scheduler
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


def train_s2i(cfg: S2IConfig) -> dict:
    """Train; save ``<output_dir>/model`` (adapter + control encoder + train_config.yaml). Returns paths and step."""
    check_run_folder(cfg, MODEL_DIR)  # a bad output path fails before anything loads
    accelerator = build_accelerator(cfg)
    train_samples, val_samples = _samples(cfg, accelerator)  # bad data fails before any model loads
    start_run_folder(accelerator, cfg, MODEL_DIR)
    dtype, device = weight_dtype(accelerator), accelerator.device
    seed = cfg.seed if cfg.seed is not None else 0
    dataset = ADE20KDataset(train_samples, cfg.resolution, cfg.crop, cfg.random_flip, seed)

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

    optimizer = build_optimizer(_param_groups(cfg, adapter_params, encoder_params, accelerator.num_processes), cfg,
                                accelerator.num_processes)
    model, optimizer, loader, lr_scheduler, plan, generator = prepare_training(
        accelerator, cfg, controlled, optimizer, dataset, collate, seed)
    last = {}

    def compute_loss(batch):
        latents = encode_latents(vae, batch["pixels"].to(device, dtype), generator)  # (B, 4, R/f, R/f)
        text = encode_prompts(pipe, batch["prompts"], device)  # (B, 77, C)
        control = batch["condition"].to(device)  # (B, 3, R, R) in [0, 1], fp32 into the fp32 encoder
        loss = diffusion_loss(model, noise_scheduler, latents, text, generator, control=control).mean()
        last["loss"] = loss.item()
        return loss, {}

    plain = accelerator.unwrap_model(model)
    validate = lambda step: run_s2i_validation(accelerator, pipe, plain, val_samples, cfg, step)  # noqa: E731
    step = train_loop(accelerator, cfg, model, optimizer, lr_scheduler, loader, params, compute_loss, plan,
                      generator, on_validation=validate)

    model_dir = Path(cfg.output_dir) / MODEL_DIR
    finish_training(accelerator, cfg, step, model_dir, CONFIG_FILE,
                    lambda folder: save_s2i_model(plain, cfg.method, folder), validate)
    return {"output_dir": Path(cfg.output_dir), "model_dir": model_dir, "step": step, **last}
