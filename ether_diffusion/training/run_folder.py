"""A training run's output folder: checked before any model loads, cleared with ``overwrite_output_dir``.

A folder that already holds a finished run (its adapter / model folder) or checkpoints is refused unless the run
resumes (``resume_from_checkpoint``) or replaces it (``overwrite_output_dir``): otherwise the new weights would
overwrite the old ones and a later ``--resume_from_checkpoint latest`` would pick up the other run's checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..outputs import OutputDirError, check_writable
from .checkpoint import checkpoint_step, remove_partial_checkpoints, resolve_checkpoint

VALIDATION_DIR = "validation"


def previous_run(output_dir: str | Path, finished: str) -> list[Path]:
    """The finished-run folder and the checkpoint folders (complete or not) in ``output_dir``."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [out / finished] if (out / finished).exists() else []
    return found + sorted((p for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
                          key=checkpoint_step)


def check_run_folder(cfg, finished: str) -> None:
    """Raise `OutputDirError` when ``cfg.output_dir`` cannot be written or holds a run this one would mix with."""
    check_writable(cfg.output_dir, "output_dir")
    resolve_checkpoint(cfg.output_dir, cfg.resume_from_checkpoint)  # a checkpoint that is not there fails now
    if cfg.overwrite_output_dir or cfg.resume_from_checkpoint is not None:
        return
    found = previous_run(cfg.output_dir, finished)
    if found:
        names = ", ".join(p.name + "/" for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise OutputDirError(f"output_dir {cfg.output_dir!r} already holds a run ({names}); pass "
                             "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, "
                             "or another --output_dir")


def clear_run_folder(output_dir: str | Path, finished: str) -> list[Path]:
    """Delete a previous run's weights, checkpoints and validation images (main process only); returns them.

    Class images and tracker logs stay (class images are reused by the next run)."""
    out = Path(output_dir)
    gone = previous_run(out, finished) + ([out / VALIDATION_DIR] if (out / VALIDATION_DIR).exists() else [])
    for p in gone:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return gone + remove_partial_checkpoints(out)


def start_run_folder(accelerator, cfg, finished: str) -> None:
    """With ``overwrite_output_dir``, clear the previous run (main process) before any process writes."""
    if cfg.overwrite_output_dir and accelerator.is_main_process:
        for p in clear_run_folder(cfg.output_dir, finished):
            print(f"overwrite_output_dir: removed {p}", flush=True)
    accelerator.wait_for_everyone()
