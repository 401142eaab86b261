"""Resumable checkpoints: ``<output_dir>/checkpoint-<step>/``, written atomically, rotated, found again on resume.

A checkpoint is written into ``.checkpoint-<step>.partial/`` (accelerate's `save_state`: optimiser, scheduler,
gradient scaler, RNG and sampler states, plus the trainable parameters only, never the frozen base model), then
``COMPLETE`` (JSON with the step) is written and the folder renamed. A folder without ``COMPLETE`` (a run killed while
saving) is never resumed from. Older checkpoints beyond ``checkpoints_total_limit`` are deleted only once the new one
is complete, so a crash while saving always leaves the previous checkpoint; `remove_partial_checkpoints` clears the
``.partial`` folders such a crash leaves behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..typed_config import ConfigError

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or does not fit the run resuming from it."""


# ------------------------------------------------------------------ trainable-only model state
def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def register_trainable_state_hooks(accelerator: Accelerator) -> None:
    """Make `save_state` / `load_state` store only the trainable parameters of each prepared model.

    SD 1.5's frozen UNet is 3.4 GB; the adapter is a few MB. Loading checks the names and shapes exactly.
    """

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            tensors = {n: p.detach().float().cpu().contiguous()
                       for n, p in _trainable(accelerator.unwrap_model(model)).items()}
            if accelerator.is_main_process:
                save_file(tensors, str(Path(output_dir) / f"trainable_{i}.safetensors"))
        weights.clear()  # accelerate saves nothing else of the models

    def load_hook(models, input_dir):
        for i, model in enumerate(list(models)):
            path = Path(input_dir) / f"trainable_{i}.safetensors"
            if not path.is_file():
                raise CheckpointError(f"{input_dir} has no {path.name}; it was not written by this trainer")
            saved, mine = load_file(str(path)), _trainable(accelerator.unwrap_model(model))
            if set(saved) != set(mine):
                diff = sorted(set(saved) ^ set(mine))[0]
                raise CheckpointError(f"checkpoint {input_dir} does not fit this run's adapter (parameter {diff} "
                                      "differs); resume with the config it was trained with")
            with torch.no_grad():
                for n, p in mine.items():
                    if saved[n].shape != p.shape:
                        raise CheckpointError(f"checkpoint {input_dir}: {n} has shape {tuple(saved[n].shape)}, "
                                              f"the model has {tuple(p.shape)}")
                    p.copy_(saved[n])
        models.clear()  # loaded here; accelerate loads no model weights

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


# ------------------------------------------------------------------ finding
def checkpoint_step(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def partial_checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``.checkpoint-<step>.partial`` folders in ``output_dir`` (saves that never finished)."""
    folder = Path(output_dir)
    return sorted(folder.glob(f".{PREFIX}*.partial")) if folder.is_dir() else []


def remove_partial_checkpoints(output_dir: str | Path) -> list[Path]:
    """Delete the leftovers of interrupted saves; returns what was removed. Call on the main process only."""
    found = partial_checkpoints(output_dir)
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(output_dir: str | Path, spec: str | None) -> Path | None:
    """``None`` -> None; ``"latest"`` -> the last complete checkpoint or None; a path -> that (complete) checkpoint."""
    if spec is None:
        return None
    if spec == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(spec)
    if not path.is_dir():
        path = Path(output_dir) / spec
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint={spec!r} is not a folder; pass 'latest' or a checkpoint folder "
                          f"such as {Path(output_dir) / (PREFIX + '500')}")
    if not is_complete(path):
        raise CheckpointError(f"checkpoint {path} is incomplete (no {MARKER} file: the run stopped while saving); "
                              "pass 'latest' to take the last complete one")
    return path


# ------------------------------------------------------------------ saving / loading
def _generator_file(folder: Path, process_index: int) -> Path:
    return folder / f"generators_{process_index}.pt"


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, total_limit: int | None = None,
                    generators: dict[str, torch.Generator] | None = None, state: dict | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically (call on every process); then keep at most ``total_limit`` checkpoints.

    The older checkpoints are deleted after the new one is complete, never before. ``generators`` (per process, e.g. the noise generator) and the JSON-able ``state`` are saved alongside.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{PREFIX}{step}"
    partial = output_dir / f".{PREFIX}{step}.partial"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if generators:
        torch.save({k: g.get_state() for k, g in generators.items()}, _generator_file(partial, accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "training_state.json").write_text(json.dumps({"step": step, **(state or {})}, indent=2))
        (partial / MARKER).write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        if total_limit is not None:  # the new one is complete: now the oldest may go
            done = list_checkpoints(output_dir)
            for p in done[: max(0, len(done) - total_limit)]:
                shutil.rmtree(p)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | Path,
                    generators: dict[str, torch.Generator] | None = None) -> dict:
    """Restore a checkpoint written by `save_checkpoint` into the prepared objects; returns its ``training_state``."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"checkpoint {path} is incomplete (no {MARKER} file); it cannot be resumed")
    accelerator.load_state(str(path))
    if generators:
        file = _generator_file(path, accelerator.process_index)
        if not file.is_file():
            raise CheckpointError(f"{path} has no {file.name}: it was saved with fewer processes than this run")
        states = torch.load(file, weights_only=True)
        for k, g in generators.items():
            g.set_state(states[k])
    return json.loads((path / "training_state.json").read_text())
