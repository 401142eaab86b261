"""Smoke version of the robustness study on the tiny model: JSON, trajectories, ETHER's fixed distance, plots."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import robustness_study  # noqa: E402

from ether_diffusion.typed_config import ConfigError  # noqa: E402


def test_study_on_tiny(tmp_path):
    cfg = robustness_study.parse_args([
        "--methods", "ether", "lora", "--learning_rates", "1e-3", "1.0",
        "--max_train_steps", "2", "--record_every", "1", "--output_dir", str(tmp_path)])
    robustness_study.main(cfg)
    doc = json.loads((tmp_path / "study.json").read_text())
    assert doc["notice"] and len(doc["runs"]) == 4
    for run in doc["runs"]:
        steps = [p["step"] for p in run["trajectory"]]
        assert steps == [1, 2]
        for p in run["trajectory"]:
            n_layers = p["n_layers"]
            assert n_layers > 0 and p["he_base"] > 0
            if run["method"] == "ether":
                # 4 blocks per layer, each exactly 2 from I: sqrt(4 * 2^2) = 4 per layer, at any learning rate
                assert p["transform_dist"] == pytest.approx(4.0 * n_layers, rel=1e-9)
                assert p["he"] == pytest.approx(p["he_base"], rel=1e-9)
            else:
                assert p["transform_dist"] is None and p["weight_dist"] >= 0
    big = {r["method"]: r["final"]["weight_dist"] for r in doc["runs"] if r["learning_rate"] == 1.0}
    small = {r["method"]: r["final"]["weight_dist"] for r in doc["runs"] if r["learning_rate"] == 1e-3}
    assert big["lora"] > small["lora"]  # an additive adapter drifts with the learning rate
    for name in ("distance_vs_lr.png", "he_over_training.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert not list(tmp_path.glob("runs/*/checkpoint-*"))


def test_study_config_errors():
    with pytest.raises(ConfigError, match="methods"):
        robustness_study.parse_args(["--methods", "dora"])
    with pytest.raises(ConfigError, match="positive"):
        robustness_study.parse_args(["--learning_rates", "-1"])
