"""The package works installed from a wheel, away from the repository: a non-editable ``pip install`` into a
folder (offline, with this environment's setuptools), then the scripts run from another folder with only that
folder on the path. The library must read nothing of the repository tree (tests/assets, configs/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = ("pyproject.toml", "README.md", "ether_diffusion", "eval")  # what a wheel is built from

PROBE = """
import json
import ether_diffusion, eval
from ether_diffusion.assets import DREAMBOOTH_ROOT, ade20k_classes
from ether_diffusion.dreambooth.config import shipped_config
from ether_diffusion.dreambooth.demo_config import DemoConfig
from ether_diffusion.dreambooth.generate import prompt_list
from ether_diffusion.dreambooth.generate_config import GenerateConfig
from ether_diffusion.study.config import StudyConfig
from ether_diffusion.training.options import ADAPTER_METHODS
prompts, shared = prompt_list(GenerateConfig(subject="dog", unique_token="qwe"))
print(json.dumps(dict(
    files=[ether_diffusion.__file__, eval.__file__, GenerateConfig(subject="dog").prompts_and_classes,
           DemoConfig().dreambooth_root, StudyConfig().dreambooth_root,
           *(str(shipped_config(m)) for m in ADAPTER_METHODS)],
    configs=[shipped_config(m).is_file() for m in ADAPTER_METHODS],
    photos=len(list((DREAMBOOTH_ROOT / "dog").glob("*.jpg"))),
    attribution=[(DREAMBOOTH_ROOT / "ATTRIBUTION.md").is_file(), (DREAMBOOTH_ROOT.parent / "ATTRIBUTION.md").is_file()],
    classes=len(ade20k_classes()), prompts=prompts, shared=shared)))
"""


@pytest.mark.slow
def test_wheel_install_runs_from_another_folder(tmp_path):
    pytest.importorskip("setuptools", reason="the offline build (--no-build-isolation) uses this environment's")
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    for name in PACKAGE:  # a clean copy: the build writes build/ and *.egg-info next to the sources
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(site), str(src)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    elsewhere.mkdir()
    # only the installed copy on the path (not the checkout); no network, no GPU
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{args}\n{done.stderr[-3000:]}"
        return done

    probe = json.loads(run("-c", PROBE).stdout.splitlines()[-1])
    assert all(Path(f).resolve().is_relative_to(site.resolve()) for f in probe["files"]), probe["files"]
    assert all(probe["configs"]) and probe["photos"] == 5 and all(probe["attribution"]) and probe["classes"] == 150
    assert len(probe["prompts"]) == 25 and probe["prompts"][0] == "a qwe dog in the jungle"
    assert probe["shared"] == {"subject": "dog", "class_token": "dog", "live": True}

    help_text = run(str(REPO / "scripts" / "generate.py"), "--help").stdout
    assert "--subject" in help_text and "--prompts_and_classes" in help_text
    run(str(REPO / "scripts" / "generate.py"), "--pretrained_model_name_or_path", "tiny", "--subject", "dog",
        "--unique_token", "qwe", "--num_inference_steps", "1", "--output_dir", "samples")
    rows = [json.loads(line) for line in (elsewhere / "samples" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt_index"] for r in rows] == list(range(25)) and rows[0]["prompt"] == "a qwe dog in the jungle"
    assert all((elsewhere / "samples" / r["path"]).is_file() for r in rows)
