"""export.py's work: an adapter folder (train_dreambooth's) -> one LoRA file (`ether_diffusion.export`) or a merged
pipeline folder.

Everything that can be checked before a model loads is (the output path, the adapter folder, a missing rank). The
base model is the one given, else the one the adapter's ``train_config.yaml`` records (`base_model`). A merged
folder is written beside the output under a temporary name and renamed when complete; with ``overwrite`` it replaces
only a diffusers pipeline folder (one with ``model_index.json``) or a file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..export import export_lora, export_peft_lora, read_lora_metadata
from ..models.loading import load_pipeline
from ..outputs import OutputDirError, check_writable
from ..typed_config import ConfigError
from ..training.adapters import LORA, adapter_kind, load_adapter, merge_adapter
from ..training.base_model import refuse_s2i_folder, resolve_base_model
from .export_config import LORA_TARGETS, MERGED, ExportConfig

PIPELINE_INDEX = "model_index.json"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def check_output(cfg: ExportConfig) -> Path:
    """The output path, refused when it exists without ``overwrite`` (or is something overwrite would not replace)
    or cannot be written."""
    path = Path(cfg.output).expanduser()
    if path.exists() or path.is_symlink():
        if not cfg.overwrite:
            raise OutputDirError(f"output {str(path)!r} exists; pass --overwrite to replace it, or another --output")
        if path.is_dir() and (cfg.to != MERGED or not (path / PIPELINE_INDEX).is_file()):
            raise OutputDirError(f"output {str(path)!r} is a folder that is not a diffusers pipeline; --overwrite "
                                 f"replaces only a file or a pipeline folder (with {PIPELINE_INDEX}): pass another "
                                 "--output")
    check_writable(path.parent, "output's folder")
    return path


def check_adapter(cfg: ExportConfig) -> str:
    """The adapter's kind ('lora' or its ETHER-family method), refused early where the export cannot work."""
    refuse_s2i_folder(cfg.adapter)
    kind = adapter_kind(cfg.adapter)
    if cfg.to in LORA_TARGETS:
        if kind in ("oft", "naive") and cfg.rank is None:
            raise ConfigError(f"{kind} has no exact low-rank form: pass --rank R (a truncated SVD; the worst "
                              "layer's error is printed)")
        if kind == LORA and cfg.rank is not None:
            raise ConfigError("a LoRA adapter is written at its own rank (its factors are re-keyed): drop --rank")
    elif cfg.rank is not None:
        raise ConfigError("--rank sets a LoRA's rank; --to merged folds the whole adapter in: drop --rank")
    return kind


def save_merged(pipe, kind: str, output: Path, dtype: torch.dtype) -> Path:
    """Fold the adapter into ``pipe.unet`` and save the pipeline in ``dtype`` as a plain diffusers folder."""
    merge_adapter(pipe.unet, kind)
    if kind == LORA:
        pipe.unet.unload_lora()  # the fused weights stay; the LoRA layers go
    pipe.to(dtype)
    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    pipe.save_pretrained(str(partial))
    if output.is_dir():
        shutil.rmtree(output)
    elif output.exists() or output.is_symlink():
        output.unlink()
    partial.rename(output)
    return output


def export(cfg: ExportConfig) -> Path:
    """Run the export ``cfg`` describes; returns the written file or folder."""
    output = check_output(cfg)
    kind = check_adapter(cfg)
    base = resolve_base_model(cfg.pretrained_model_name_or_path, cfg.adapter)
    print(f"loading base model {base!r} and adapter {cfg.adapter} ({kind})", flush=True)
    pipe = load_pipeline(base, torch_dtype=torch.float32, revision=cfg.revision, variant=cfg.variant)
    load_adapter(pipe.unet, cfg.adapter)
    dtype = DTYPES[cfg.dtype]
    if cfg.to == MERGED:
        return save_merged(pipe, kind, output, dtype)
    fmt = LORA_TARGETS[cfg.to]
    if kind == LORA:
        path = export_peft_lora(pipe.unet, output, fmt, dtype=dtype, base_model=base)
    else:
        path = export_lora(pipe.unet, output, fmt, dtype=dtype, rank=cfg.rank, base_model=base)
    meta = read_lora_metadata(path)
    error = f", worst relative error {meta['max_relative_error']} ({meta['worst_layer']})" if "worst_layer" in meta \
        else ""
    print(f"{meta['method']} as a rank-{meta['rank']} LoRA ({fmt} keys, {cfg.dtype}){error}", flush=True)
    return path
