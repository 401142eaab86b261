"""Two processes (DDP over gloo on the CPU, launched by torch.distributed.run as `accelerate launch --multi_gpu` does):
2 processes x batch b train (and log the loss of) what 1 process x batch 2b trains (same data order, same noise per
sample), checkpoints hold every process's noise generator, and a resumed run ends with the adapter of the
uninterrupted one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .conftest import DOG, REPO


def _run(script, out, processes, *args):
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launch, str(REPO / "scripts" / script), "--pretrained_model_name_or_path", "tiny",
               "--output_dir", str(out), "--report_to", "none", "--seed", "0", *args]
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = dict(os.environ, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path, OMP_NUM_THREADS="1")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _logged_loss(done) -> float:
    """The last loss the progress bar showed (the main process's; under DDP the mean over processes)."""
    return float(re.findall(r"loss=([0-9.]+)", done.stderr)[-1])


def _train(out, *extra):
    _run("train_dreambooth.py", out, 2, "--instance_data_dir", str(DOG), "--instance_prompt", "a photo of qwe dog",
         "--resolution", "64", "--max_train_steps", "4", "--checkpointing_steps", "2", "--random_flip", "true",
         "--method", "ether_plus", *extra)
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def _close(a: dict, b: dict) -> None:
    """Equal up to float rounding (gloo's all-reduce sums in another order than one batch's mean; Adam divides by
    tiny second moments); other noise or data would move the weights by about the learning rate (1e-3 .. 1e-2)."""
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_twice_the_batch_trains(tmp_path, class_dir):
    args = ["--instance_data_dir", str(DOG), "--instance_prompt", "a photo of qwe dog", "--resolution", "64",
            "--max_train_steps", "2", "--random_flip", "true", "--method", "ether_plus", "--learning_rate", "1e-2",
            "--with_prior_preservation", "true", "--class_prompt", "a photo of dog", "--class_data_dir",
            str(class_dir), "--num_class_images", "2"]
    weights, losses = {}, {}
    for processes, batch in ((1, 2), (2, 1)):
        out = tmp_path / f"{processes}x{batch}"
        done = _run("train_dreambooth.py", out, processes, "--train_batch_size", str(batch), *args)
        losses[processes] = _logged_loss(done)
        weights[processes] = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert losses[2] == pytest.approx(losses[1], abs=2e-4)  # the bar shows 4 decimals
    base = load_file(str(tmp_path / "1x2" / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(v, v * 0) for v in base.values())
    _close(weights[2], weights[1])


@pytest.mark.slow
def test_two_s2i_processes_train_what_one_process_with_twice_the_batch_trains(tmp_path):
    ade = REPO / "tests" / "assets" / "ade20k"
    captions = ade / "captions_oft_blip.jsonl"
    args = ["--data_root", str(ade), "--train_split", "validation", "--captions", str(captions),
            "--validation_split", "null", "--resolution", "32", "--max_train_steps", "2", "--method", "ether",
            "--learning_rate", "1e-3", "--latent_cache_dir", str(tmp_path / "cache")]
    weights, losses = {}, {}
    for processes, batch in ((1, 2), (2, 1)):
        out = tmp_path / f"{processes}x{batch}"
        losses[processes] = _logged_loss(_run("train_s2i.py", out, processes, "--train_batch_size", str(batch), *args))
        model = out / "model"
        weights[processes] = {**load_file(str(model / "adapter_model.safetensors")),
                              **load_file(str(model / "control_encoder.safetensors"))}
    assert losses[2] == pytest.approx(losses[1], abs=2e-4)
    _close(weights[2], weights[1])


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
    run = tmp_path / "run"
    reference = _train(run)
    # written once, by the main process: one set of weights, optimiser and scheduler state, each process's own RNGs
    assert sorted(p.name for p in (run / "checkpoint-2").iterdir()) == [
        "COMPLETE", "generators_0.pt", "generators_1.pt", "optimizer.bin", "random_states_0.pkl",
        "random_states_1.pkl", "scheduler.bin", "trainable_0.safetensors", "training_state.json"]
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "checkpoint-2", "checkpoint-4"]  # no partial folder
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    resumed = _train(run, "--resume_from_checkpoint", "latest")
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), k
