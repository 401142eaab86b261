"""Sample images from a base model with one adapter (or none) for a prompt list, and write ``manifest.jsonl``.

Prompts: the user's (``prompts`` / ``prompts_file``) or the 25 DreamBooth evaluation prompts of a ``subject`` (from
``prompts_and_classes``, by default the copy shipped in `ether_diffusion.assets`); or a ``requests_file`` of
(prompt, adapter) rows (``requests.py``): every adapter is loaded under its own name and each batch mixes adapters,
one per sample (``ether_diffusion.assignment``), unmerged.
Image ``j`` of prompt ``i`` uses seed ``seed + i * num_images_per_prompt + j`` with a CPU generator, so it is the
same image whatever the batch size, the number of processes or the GPU; batches are split across the processes of
``accelerate launch`` (`ether_diffusion.sampling.render_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState

from ..data.dreambooth import eval_prompts
from ..io import load_ether
from ..models.loading import load_pipeline
from ..assignment import NONE
from ..outputs import check_writable
from ..sampling import pipeline_dtype, render_rows, set_scheduler
from ..training.adapters import LORA, adapter_kind, load_adapter, merge_adapter
from ..training.base_model import refuse_s2i_folder, request_adapters, resolve_shared_base_model
from ..typed_config import ConfigError
from .generate_config import BASE, GenerateConfig
from .requests import adapter_labels, read_requests


def prompt_list(cfg: GenerateConfig) -> tuple[list[str], dict]:
    """(prompts, extra manifest keys shared by all rows)."""
    if cfg.subject is not None:
        prompts, class_token, live = eval_prompts(cfg.subject, cfg.prompts_and_classes, cfg.unique_token,
                                                  cfg.class_token)
        return prompts, {"subject": cfg.subject, "class_token": class_token, "live": live}
    if cfg.prompts_file is not None:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts_file {cfg.prompts_file!r} not found; one prompt per line")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ConfigError(f"prompts_file {cfg.prompts_file!r} holds no prompt")
        return prompts, {}
    return list(cfg.prompts), {}


def build_pipeline(cfg: GenerateConfig, device: torch.device):
    """(pipeline on ``device``, method label)."""
    if PartialState().is_main_process:
        print(f"loading base model {cfg.pretrained_model_name_or_path!r}"
              + (f" and adapter {cfg.adapter}" if cfg.adapter else ""), flush=True)
    pipe = load_pipeline(cfg.pretrained_model_name_or_path, torch_dtype=pipeline_dtype(cfg.mixed_precision, device),
                         revision=cfg.revision, variant=cfg.variant)
    method = BASE
    if cfg.adapter is not None:
        method = load_adapter(pipe.unet, cfg.adapter)
        if cfg.merge:
            merge_adapter(pipe.unet, method)
        elif cfg.attention == "xformers":
            pipe.unet.enable_xformers_memory_efficient_attention()
    set_scheduler(pipe, cfg.scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), cfg.method_name or method


def generate(cfg: GenerateConfig) -> Path:
    """Sample every (prompt, image) pair; returns the manifest path."""
    check_writable(cfg.output_dir)  # before any model loads
    if cfg.adapter is not None:
        refuse_s2i_folder(cfg.adapter)
        adapter_kind(cfg.adapter)  # a folder that is no adapter fails here, before the base model loads
    folders = (request_adapters(cfg.requests_file) if cfg.requests_file is not None
               else [cfg.adapter] * bool(cfg.adapter))  # whose train_config.yaml may name the base model
    cfg = replace(cfg, pretrained_model_name_or_path=resolve_shared_base_model(cfg.pretrained_model_name_or_path,
                                                                               folders))
    state = PartialState()
    if cfg.requests_file is not None:
        return generate_requests(cfg, state)
    prompts, shared = prompt_list(cfg)
    pipe, method = build_pipeline(cfg, state.device)
    size = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = Path(cfg.output_dir)
    group = cfg.subject if cfg.subject is not None else "prompts"
    n = cfg.num_images_per_prompt
    rows = [{"path": f"{method}/{group}/{i:02d}_{j:02d}.png", "prompt": p, "seed": cfg.seed + i * n + j,
             "method": method, **({"prompt_index": i} if cfg.subject is not None else {}), **shared,
             "base_model": cfg.pretrained_model_name_or_path, "adapter": cfg.adapter,
             "num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale}
            for i, p in enumerate(prompts) for j in range(n)]

    render = renderer(pipe, cfg, size, per_sample_adapters=False)
    return render_rows(state, rows, out, cfg.batch_size, cfg.skip_existing, f"generate {method}", render)


def renderer(pipe, cfg: GenerateConfig, size: int, per_sample_adapters: bool) -> Callable[[list[dict]], list]:
    """``render(rows) -> PIL images``: one pipeline call for a batch of manifest rows, each with its own seed (and,
    with ``per_sample_adapters``, its own ``adapter_name``)."""

    def render(batch: list[dict]) -> list:
        generators = [torch.Generator("cpu").manual_seed(r["seed"]) for r in batch]
        kwargs = ({"cross_attention_kwargs": {"ether_adapters": [r["adapter_name"] for r in batch]}}
                  if per_sample_adapters else {})
        with torch.no_grad():
            return pipe([r["prompt"] for r in batch], generator=generators, height=size, width=size,
                        num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                        **kwargs).images

    return render


def generate_requests(cfg: GenerateConfig, state: PartialState) -> Path:
    """Sample a requests file: rows with different adapters share a batch; returns the manifest path."""
    requests = read_requests(cfg.requests_file)
    folders = list(dict.fromkeys(r["adapter"] for r in requests if r["adapter"] is not None))
    methods = {folder: adapter_kind(folder) for folder in folders}
    for folder, method in methods.items():
        if method == LORA:
            raise ConfigError(f"adapter {folder!r} is a LoRA: mixed batches need ether-diffusion adapters "
                              "(ether, ether_plus, oft, naive)")
    labels = adapter_labels(folders)
    pipe, _ = build_pipeline(cfg, state.device)
    for folder in folders:
        load_ether(pipe.unet, folder, adapter_name=labels[folder])
    if cfg.attention == "xformers" and folders:
        pipe.unet.enable_xformers_memory_efficient_attention()
    size = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    n = cfg.num_images_per_prompt
    rows = []
    for i, req in enumerate(requests):
        folder = req["adapter"]
        method = cfg.method_name or (methods[folder] if folder is not None else BASE)
        label = labels[folder] if folder is not None else BASE
        extra = {k: v for k, v in req.items() if k not in ("prompt", "adapter", "seed")}
        seed = req.get("seed", cfg.seed + i * n)
        rows += [{"path": f"{method}/{label}/{i:03d}_{j:02d}.png", "prompt": req["prompt"], "seed": seed + j,
                  "method": method, **extra, "base_model": cfg.pretrained_model_name_or_path, "adapter": folder,
                  "adapter_name": label if folder is not None else NONE,
                  "num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale}
                 for j in range(n)]

    render = renderer(pipe, cfg, size, per_sample_adapters=bool(folders))
    return render_rows(state, rows, out=Path(cfg.output_dir), batch_size=cfg.batch_size,
                       skip_existing=cfg.skip_existing, desc="generate mixed", render=render)
