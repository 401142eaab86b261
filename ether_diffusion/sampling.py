"""Sampling shared by the generators of every application (DreamBooth, S2I): the pipeline's dtype and scheduler, and
rendering the rows of a manifest in batches split across the processes of ``accelerate launch``.

A row carries its own seed; the caller's ``render(batch)`` draws each image from a CPU generator seeded with it, so
an image is the same whatever the batch size, the number of processes or the GPU. Every process knows all rows, so
the main process writes ``manifest.jsonl`` (`ether_diffusion.manifest`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import PartialState
from PIL import Image
from tqdm.auto import tqdm

from .manifest import MANIFEST_NAME, write_manifest
from .outputs import atomic_write


def set_scheduler(pipe, name: str) -> None:
    """Replace the pipeline's scheduler: "ddim", "dpm_solver" or "euler"; "default" keeps the model's."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    kinds = {"ddim": DDIMScheduler, "dpm_solver": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
    if name != "default":
        pipe.scheduler = kinds[name].from_config(pipe.scheduler.config)


def pipeline_dtype(mixed_precision: str | None, device: torch.device) -> torch.dtype:
    """Weights dtype for "no" / "fp16" / "bf16"; None: fp16 on a GPU, fp32 on a CPU."""
    precision = mixed_precision or ("fp16" if device.type == "cuda" else "no")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def render_rows(state: PartialState, rows: list[dict], out: Path, batch_size: int, skip_existing: bool, desc: str,
                render: Callable[[list[dict]], list]) -> Path:
    """Render the manifest ``rows`` (``render(batch) -> PIL images``) in batches split across the processes, save
    each to ``out / row["path"]`` whole (keeping those already there with ``skip_existing``: an interrupted run
    leaves no half image to keep), write the manifest."""
    todo = [r for r in rows if not (skip_existing and (out / r["path"]).is_file())]
    batches = [todo[k: k + batch_size] for k in range(0, len(todo), batch_size)]
    if state.is_main_process:
        for folder in {(out / r["path"]).parent for r in rows}:
            folder.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    with state.split_between_processes(batches) as mine:
        for batch in tqdm(mine, desc=desc, unit="batch", disable=not state.is_local_main_process):
            for r, im in zip(batch, render(batch)):
                path = out / r["path"]
                image_format = Image.registered_extensions()[path.suffix.lower()]  # the temporary name has none
                atomic_write(path, lambda tmp: im.save(tmp, format=image_format))
    state.wait_for_everyone()
    manifest = out / MANIFEST_NAME
    if state.is_main_process:
        manifest = write_manifest(out, rows)
    state.wait_for_everyone()
    return manifest
