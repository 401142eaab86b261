"""The S2I scripts as users run them: 2-process training, generation from maps, the eval package's S2I protocol,
the shipped configs, and one clear line for each bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ether_diffusion.data.ade20k import ADE20KDataError
from ether_diffusion.training.cli import run_cli

from .conftest import ADE20K, CAPTIONS, REPO, SCRIPTS

METHODS = ("ether", "ether_plus", "oft", "naive", "lora", "none")


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_s2i_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(script, argv, capsys) -> str:
    """Run a script's entry point as ``__main__`` does; returns its one-line error."""
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: script.main(script.parse_args(argv)), extra_errors=(ADE20KDataError,))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.slow
def test_two_processes_train_then_generate_then_eval(tmp_path):
    run = tmp_path / "run"
    # torchrun is what `accelerate launch --multi_gpu` runs underneath; ACCELERATE_USE_CPU: DDP over gloo on CPU
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(SCRIPTS / "train_s2i.py"), "--config", str(REPO / "configs" / "s2i" / "ether.yaml"),
           "--pretrained_model_name_or_path", "tiny", "--data_root", str(ADE20K), "--train_split", "validation",
           "--captions", str(CAPTIONS), "--validation_captions", str(CAPTIONS), "--resolution", "32",
           "--train_batch_size", "1", "--max_train_steps", "2", "--checkpointing_steps", "2",
           "--num_validation_images", "2", "--validation_inference_steps", "1", "--report_to", "none",
           "--output_dir", str(run)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}  # this checkout
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loss=" in done.stderr and "2/2" in done.stderr  # the progress bar
    assert (run / "checkpoint-2" / "generators_1.pt").is_file()  # two ranks trained
    assert (run / "model" / "control_encoder.safetensors").is_file() and (run / "validation" / "step000002.png").is_file()

    generate = _script("generate_s2i")
    common = ["--pretrained_model_name_or_path", "tiny", "--model", str(run / "model"), "--annotations",
              str(ADE20K / "annotations" / "validation"), "--captions", str(CAPTIONS), "--num_inference_steps", "2"]
    manifest = generate.main(generate.parse_args(common + ["--output_dir", str(tmp_path / "a"), "--batch_size", "4"]))
    generate.main(generate.parse_args(common + ["--output_dir", str(tmp_path / "b"), "--batch_size", "3"]))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [(r["path"], r["prompt"], r["seed"], r["method"]) for r in rows][3] == (
        "ether/ADE_val_00000004.png", "a small plane on a runway", 3, "ether")
    for r in rows:
        assert r["condition"] == str((ADE20K / "annotations" / "validation" / r["path"][6:]).resolve())
        a, b = (np.asarray(Image.open(tmp_path / d / r["path"]), np.int16) for d in "ab")
        assert a.shape == (32, 32, 3) and np.abs(a - b).max() <= 1  # an image depends on its seed, not the batch

    from eval.cli import main as eval_main  # the eval package reads the manifest as written

    assert eval_main(["s2i", "--generated", str(tmp_path / "a"), "--ade-root", str(ADE20K), "--random-init",
                      "--no-fid", "--batch-size", "4", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["results"]["ether"]["n_images"] == 4 and 0 <= metrics["results"]["ether"]["mIoU"] <= 1


@pytest.mark.parametrize("method", METHODS)
def test_shipped_configs_parse(method):
    cfg = _script("train_s2i").parse_args(["--config", str(REPO / "configs" / "s2i" / f"{method}.yaml")])
    assert cfg.method == method and cfg.train_batch_size == 16 and cfg.num_train_epochs == 20
    assert cfg.resolution == 512 and cfg.control_learning_rate == 1e-5 and cfg.validation_guidance_scale == 9.0
    gen = _script("generate_s2i").parse_args(["--config", str(REPO / "configs" / "s2i" / "generate.yaml"),
                                              "--model", "runs/s2i/ether/model"])
    assert (gen.num_inference_steps, gen.guidance_scale, gen.scheduler) == (50, 9.0, "ddim")


def test_bad_input_one_line_each(tmp_path, ade_copy, capsys):
    train, generate = _script("train_s2i"), _script("generate_s2i")
    base = ["--pretrained_model_name_or_path", "tiny", "--data_root", str(ade_copy), "--output_dir", str(tmp_path)]
    assert "has no images/training (splits there: ['validation'])" in _cli(train, base + ["--prompt", ""], capsys)
    assert "pass --captions FILE" in _cli(train, base, capsys)
    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rat: 1.0e-3\n")
    err = _cli(train, base + ["--prompt", "", "--config", str(typo)], capsys)
    assert "unknown config key 'learning_rat' in" in err and "did you mean 'learning_rate'?" in err
    assert "method='dora' is not allowed" in _cli(train, base + ["--prompt", "", "--method", "dora"], capsys)
    err = _cli(train, base + ["--prompt", "", "--target_modules", "attn1.to_qq"], capsys)  # the adapter's EtherConfig
    assert "target_modules entry 'attn1.to_qq' does not end in one of" in err
    other = tmp_path / "captions.json"
    other.write_text(json.dumps({"ADE_train_00000001": "an airport"}))
    err = _cli(train, base + ["--train_split", "validation", "--captions", str(other)], capsys)
    assert "names none of the 4 images of validation" in err
    gen = ["--pretrained_model_name_or_path", "tiny", "--prompt", "", "--output_dir", str(tmp_path / "g")]
    err = _cli(generate, gen + ["--model", str(tmp_path), "--annotations", str(ADE20K / "annotations" / "validation")],
               capsys)
    assert "has no control_encoder_config.json" in err
    assert "does not exist" in _cli(generate, gen + ["--model", str(tmp_path), "--annotations", "nowhere"], capsys)


def test_several_images_per_map_and_limit(tmp_path):
    from ether_diffusion.models.tiny import tiny_pipeline
    from ether_diffusion.s2i.model import build_s2i_model, save_s2i_model

    from .conftest import tiny_config

    pipe = tiny_pipeline()
    controlled, _, _ = build_s2i_model(pipe.unet, tiny_config(tmp_path, method="none"), pipe.vae_scale_factor)
    save_s2i_model(controlled, "none", tmp_path / "model")
    generate = _script("generate_s2i")
    manifest = generate.main(generate.parse_args([
        "--pretrained_model_name_or_path", "tiny", "--model", str(tmp_path / "model"), "--annotations",
        str(ADE20K / "annotations" / "validation"), "--prompt", "a scene", "--limit", "2", "--num_images_per_map", "2",
        "--num_inference_steps", "1", "--resolution", "32", "--seed", "10", "--method_name", "encoder-only",
        "--output_dir", str(tmp_path / "out")]))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [(r["path"], r["seed"], r["prompt"]) for r in rows] == [
        ("encoder-only/ADE_val_00000001_00.png", 10, "a scene"), ("encoder-only/ADE_val_00000001_01.png", 11, "a scene"),
        ("encoder-only/ADE_val_00000002_00.png", 12, "a scene"), ("encoder-only/ADE_val_00000002_01.png", 13, "a scene")]
    first, second = (np.asarray(Image.open(tmp_path / "out" / r["path"])) for r in rows[:2])
    assert first.shape == (32, 32, 3) and not np.array_equal(first, second)  # one seed per image
