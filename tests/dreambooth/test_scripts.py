"""The scripts as users run them: `accelerate launch` training, generation + the eval package's manifest reader,
the one-command demo, and one clear line for each bad input."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ether_diffusion.dreambooth.class_images import count_images, ensure_class_images
from ether_diffusion.dreambooth.generate import generate
from ether_diffusion.dreambooth.generate_config import GenerateConfig

from .conftest import ASSETS, DOG, REPO, smooth_image

SCRIPTS = REPO / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_accelerate_launch_then_generate_for_eval(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPTS / "train_dreambooth.py"),
               "--pretrained_model_name_or_path", "tiny", "--method", "ether_plus", "--instance_data_dir", str(DOG),
               "--instance_prompt", "a photo of qwe dog", "--with_prior_preservation", "--class_prompt",
               "a photo of dog", "--class_data_dir", str(tmp_path / "class"), "--num_class_images", "2",
               "--class_inference_steps", "1", "--resolution", "64", "--max_train_steps", "2",
               "--output_dir", str(out), "--report_to", "none", "--seed", "0"]
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])  # this checkout's package
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loss=" in done.stderr and "2/2" in done.stderr  # the progress bar
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert count_images(tmp_path / "class") == 2  # generated and kept

    # the DreamBooth evaluation set of the subject, read back by the eval package
    from eval.manifest import read_manifest

    samples = tmp_path / "samples"
    gen = dict(pretrained_model_name_or_path="tiny", subject="dog", prompts_and_classes=str(ASSETS / "prompts_and_classes.txt"),
               unique_token="qwe", num_images_per_prompt=1, num_inference_steps=1, batch_size=25, resolution=64,
               output_dir=str(samples))
    generate(GenerateConfig(adapter=str(out / "adapter"), **gen))
    generate(GenerateConfig(**gen))  # the base model into the same folder: the manifest keeps both
    rows = read_manifest(samples, require=("subject",))
    assert len(rows) == 50
    assert {r.method for r in rows} == {"ether_plus", "base"}
    mine = [r for r in rows if r.method == "ether_plus"]
    assert [r.prompt_index for r in mine] == list(range(25)) and {r.subject for r in mine} == {"dog"}
    assert mine[13].prompt == "a qwe dog wearing a black top hat and a monocle"
    assert all(r.path.is_file() and Image.open(r.path).size == (64, 64) for r in rows)


def test_same_seed_same_image_whatever_the_batch(tmp_path):
    common = dict(pretrained_model_name_or_path="tiny", prompts=("a dog", "a cat"), num_images_per_prompt=2,
                  num_inference_steps=1, resolution=64)
    generate(GenerateConfig(output_dir=str(tmp_path / "a"), batch_size=4, **common))
    generate(GenerateConfig(output_dir=str(tmp_path / "b"), batch_size=1, **common))
    for name in ("00_00", "00_01", "01_00", "01_01"):
        a = np.asarray(Image.open(tmp_path / "a" / "base" / "prompts" / f"{name}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / "base" / "prompts" / f"{name}.png"))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, name
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "base" / "prompts" / "00_00.png")),
                              np.asarray(Image.open(tmp_path / "a" / "base" / "prompts" / "00_01.png")))


def test_class_images_topped_up_and_kept(tmp_path):
    from accelerate import Accelerator

    from ether_diffusion.models.tiny import tiny_pipeline

    folder = tmp_path / "class"
    folder.mkdir()
    smooth_image(0, (64, 64)).save(folder / "mine.png")
    (folder / "broken.png").write_bytes(b"not a png")
    acc, pipe = Accelerator(cpu=True), tiny_pipeline()
    ensure_class_images(acc, pipe, folder, "a photo of dog", 3, 64, batch_size=2, num_inference_steps=1)
    made = sorted(p.name for p in folder.glob("class_*.png"))
    assert made == ["class_00000.png", "class_00001.png"] and count_images(folder) == 3
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    ensure_class_images(acc, pipe, folder, "a photo of dog", 3, 64, num_inference_steps=1)  # enough: nothing new
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def _fails(capsys, argv, message, script="train_dreambooth"):
    from ether_diffusion.training.cli import run_cli

    mod = _script(script)
    with pytest.raises(SystemExit) as ex:
        run_cli(lambda: mod.main(mod.parse_args(argv)))
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert message in err, err
    return err


BASE = ["--pretrained_model_name_or_path", "tiny", "--instance_prompt", "a photo of qwe dog", "--report_to", "none",
        "--resolution", "64", "--max_train_steps", "1"]


def test_bad_inputs_get_one_line(tmp_path, capsys):
    out = ["--output_dir", str(tmp_path / "run")]
    _fails(capsys, [*BASE, *out, "--instance_data_dir", str(tmp_path / "missing")], "does not exist")
    (tmp_path / "empty").mkdir()
    _fails(capsys, [*BASE, *out, "--instance_data_dir", str(tmp_path / "empty")], "is empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.warns(UserWarning, match="a.jpg"):
        _fails(capsys, [*BASE, *out, "--instance_data_dir", str(tmp_path / "junk")], "no decodable image")
    offline = [*BASE[2:], *out, "--instance_data_dir", str(DOG), "--pretrained_model_name_or_path",
               "someone/not-cached-model"]
    err = _fails(capsys, offline, "is not available offline")
    assert "--pretrained_model_name_or_path /path/to/" in err
    _fails(capsys, [*BASE, *out, "--instance_data_dir", str(DOG), "--pretrained_model_name_or_path",
                    str(tmp_path / "nowhere")], "does not exist")
    config = tmp_path / "c.yaml"
    config.write_text("instance_data_dir: x\nlerning_rate: 1\n")
    _fails(capsys, ["--config", str(config)], "unknown config key 'lerning_rate'")
    _fails(capsys, [*BASE, *out, "--instance_data_dir", str(DOG), "--resume_from_checkpoint",
                    str(tmp_path / "nope")], "is not a folder")
    _fails(capsys, ["--pretrained_model_name_or_path", "tiny", "--adapter", str(tmp_path), "--subject", "dog"],
           "has no adapter_config.json", script="generate")


@pytest.mark.slow
def test_demo_writes_a_report(tmp_path):
    from ether_diffusion.dreambooth.demo import TINY_NOTICE, DemoConfig, run_demo

    cfg = DemoConfig(output_dir=str(tmp_path / "demo"), max_train_steps=2, num_images_per_prompt=1,
                     num_inference_steps=1, baseline=False)
    report = run_demo(cfg)
    text = report.read_text()
    assert TINY_NOTICE in text and "| ether | 25 |" in text and "real images" in text
    assert "![grid](eval/grid.png)" in text  # the eval package's grid, beside its metrics
    assert (Path(cfg.output_dir) / "eval" / "grid.png").is_file()
    assert (Path(cfg.output_dir) / "eval" / "metrics.json").is_file()


def test_local_model_folder_trains(tmp_path):
    """A diffusers folder on disk (how SD 1.5 is passed offline) loads and trains like a hub id."""
    from ether_diffusion.models.loading import load_pipeline
    from ether_diffusion.models.tiny import tiny_pipeline
    from ether_diffusion.dreambooth.train import train_dreambooth

    from .conftest import tiny_config

    tiny_pipeline().save_pretrained(tmp_path / "model")
    pipe = load_pipeline(str(tmp_path / "model"))
    assert pipe.unet.config.cross_attention_dim == 32 and pipe.safety_checker is None
    result = train_dreambooth(tiny_config(tmp_path / "run", pretrained_model_name_or_path=str(tmp_path / "model"),
                                          max_train_steps=1, method="lora", lora_rank=2))
    assert result["step"] == 1 and (result["adapter_dir"] / "adapter_config.json").is_file()
