"""Checkpoints: an interrupted run resumes from its last complete checkpoint and ends exactly where an uninterrupted
run ends; half-written checkpoints are never taken; rotation; validation images reach TensorBoard."""

from __future__ import annotations

import shutil

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from ether_diffusion.training.checkpoint import CheckpointError, list_checkpoints, resolve_checkpoint
from ether_diffusion.dreambooth.train import train_dreambooth

from .conftest import tiny_config


def _reset():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _optimizer_state(ckpt):
    return torch.load(ckpt / "optimizer.bin", weights_only=False)["state"]


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, class_dir):
    run = tmp_path / "run"
    settings = dict(method="ether_plus", max_train_steps=4, checkpointing_steps=2, train_batch_size=2,
                    random_flip=True, lr_scheduler="linear", lr_warmup_steps=1, with_prior_preservation=True,
                    class_prompt="a photo of dog", class_data_dir=str(class_dir), num_class_images=2,
                    validation_prompt="a qwe dog", validation_steps=2, num_validation_images=1,
                    validation_inference_steps=1, report_to="tensorboard")
    full = train_dreambooth(tiny_config(run, **settings))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-4"]
    reference = load_file(str(full["adapter_dir"] / "adapter_model.safetensors"))
    reference_opt = _optimizer_state(run / "checkpoint-4")
    assert sorted(p.name for p in (run / "validation").iterdir()) == ["step000002_0.png", "step000004_0.png"]
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    assert events and any(b"validation" in e.read_bytes() for e in events)  # the image summary tag

    # simulate a crash after step 2: later state is gone, and a save was cut short
    _reset()
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    (run / "checkpoint-3").mkdir()  # no COMPLETE marker: must never be taken
    (run / "checkpoint-3" / "optimizer.bin").write_bytes(b"half")
    assert resolve_checkpoint(run, "latest").name == "checkpoint-2"
    resumed = train_dreambooth(tiny_config(run, resume_from_checkpoint="latest", **settings))
    assert resumed["step"] == 4
    again = load_file(str(resumed["adapter_dir"] / "adapter_model.safetensors"))
    for k in reference:
        assert torch.equal(again[k], reference[k]), k
    resumed_opt = _optimizer_state(run / "checkpoint-4")
    for i, state in reference_opt.items():
        for key, t in state.items():
            assert torch.equal(resumed_opt[i][key], t), (i, key)
    sched = torch.load(run / "checkpoint-4" / "scheduler.bin", weights_only=False)
    assert sched["last_epoch"] == 4

    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_checkpoint(run, str(run / "checkpoint-3"))


def test_rotation_and_fresh_start(tmp_path, capsys):
    run = tmp_path / "run"
    result = train_dreambooth(tiny_config(run, max_train_steps=3, checkpointing_steps=1, checkpoints_total_limit=2,
                                          resume_from_checkpoint="latest"))
    assert result["step"] == 3
    assert "no complete checkpoint" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-3"]
    assert not list(run.glob(".checkpoint-*"))  # no partial folders left behind
