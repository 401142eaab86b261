"""A run that dies while writing a checkpoint keeps the previous one (even with ``checkpoints_total_limit 1``), and
the next run clears the half-written folder and resumes from the complete checkpoint."""

from __future__ import annotations

import pytest

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from ether_diffusion.training.checkpoint import is_complete, list_checkpoints, partial_checkpoints
from ether_diffusion.dreambooth.train import train_dreambooth

from .conftest import reset_accelerate, tiny_config


class Killed(BaseException):
    """Stands in for the process being killed (not an Exception, so nothing on the way catches it)."""


@pytest.mark.slow
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    settings = dict(checkpointing_steps=1, checkpoints_total_limit=1, resume_from_checkpoint="latest")
    train_dreambooth(tiny_config(run, max_train_steps=1, **settings))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-1"]
    reset_accelerate()

    real_save_state = Accelerator.save_state

    def save_then_die(self, output_dir=None, **kwargs):
        real_save_state(self, output_dir, **kwargs)  # every file of the checkpoint, but never its COMPLETE marker
        raise Killed

    monkeypatch.setattr(Accelerator, "save_state", save_then_die)
    try:
        train_dreambooth(tiny_config(run, max_train_steps=2, **settings))
        raise AssertionError("the save was expected to die")
    except Killed:
        pass
    monkeypatch.undo()
    reset_accelerate()
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-1"] and is_complete(run / "checkpoint-1")
    assert [p.name for p in partial_checkpoints(run)] == [".checkpoint-2.partial"]
    capsys.readouterr()

    resumed = train_dreambooth(tiny_config(run, max_train_steps=2, **settings))
    out = capsys.readouterr().out
    assert "removed" in out and ".checkpoint-2.partial" in out
    assert f"resuming from {run / 'checkpoint-1'} at step 1" in out
    assert resumed["step"] == 2 and not partial_checkpoints(run)
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2"]  # rotated once checkpoint-2 was complete
    reset_accelerate()

    # the resumed run ends where an uninterrupted 2-step run ends
    straight = train_dreambooth(tiny_config(tmp_path / "straight", max_train_steps=2, checkpointing_steps=1))
    a = load_file(str(resumed["adapter_dir"] / "adapter_model.safetensors"))
    b = load_file(str(straight["adapter_dir"] / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
