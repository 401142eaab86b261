"""Two launched CPU processes (torchrun + accelerate PartialState) give the numbers of one (split, then gathered)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from eval.config import DreamBoothEvalConfig
from eval.dreambooth import evaluate_dreambooth

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(synthetic_dreambooth, tmp_path):
    gen, real, _ = synthetic_dreambooth({"a": 2, "b": 3}, prompts=3, per_prompt=2)  # 5 groups over 2 ranks
    out = tmp_path / "two"
    # torchrun is what `accelerate launch --multi_gpu` runs underneath; on CPU, PartialState(cpu=True) uses gloo
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "eval", "dreambooth", "--generated", str(gen), "--real", str(real), "--random-init",
           "--lpips-size", "64", "--batch-size", "2", "--metrics", "dino", "lpips", "lpips_diversity",
           "--out", str(out)]
    # ACCELERATE_USE_CPU: CPU ranks over gloo, also on a machine with fewer GPUs than ranks
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads((out / "metrics.json").read_text())
    one = evaluate_dreambooth(DreamBoothEvalConfig(generated=str(gen), real=str(real), out=str(tmp_path / "one"),
                                                   random_init=True, lpips_size=64, batch_size=2,
                                                   metrics=("dino", "lpips", "lpips_diversity"), device="cpu"))
    assert two["processes"] == 2 and one["processes"] == 1
    for method, result in one["results"].items():
        assert two["results"][method]["pairs"] == result["pairs"]
        for metric, value in result["means"].items():
            assert two["results"][method]["means"][metric] == pytest.approx(value, rel=1e-5)
        for prompt, values in result["per_prompt"].items():
            assert two["results"][method]["per_prompt"][prompt]["lpips_diversity"] == pytest.approx(
                values["lpips_diversity"], rel=1e-5)
    assert two["real_images"]["means"] == pytest.approx(one["real_images"]["means"], rel=1e-5)
