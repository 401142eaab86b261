"""Two processes (DDP over gloo on the CPU, launched by torch.distributed.run as `accelerate launch` does): the shared
loop trains, checkpoints every process's noise generator, and a resumed run ends with the adapter of the
uninterrupted one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .conftest import DOG, REPO


def _train(out, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(REPO / "scripts" / "train_dreambooth.py"), "--pretrained_model_name_or_path", "tiny",
               "--instance_data_dir", str(DOG), "--instance_prompt", "a photo of qwe dog", "--resolution", "64",
               "--max_train_steps", "4", "--checkpointing_steps", "2", "--output_dir", str(out), "--report_to", "none",
               "--seed", "0", "--random_flip", "true", "--method", "ether_plus", *extra]
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = dict(os.environ, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
    run = tmp_path / "run"
    reference = _train(run)
    assert {p.name for p in (run / "checkpoint-2").glob("generators_*.pt")} == {"generators_0.pt", "generators_1.pt"}
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    resumed = _train(run, "--resume_from_checkpoint", "latest")
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), k
