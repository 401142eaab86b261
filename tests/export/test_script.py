"""scripts/export.py end to end on ``tiny`` (base model read from the adapter's train_config.yaml), and its one-line
errors, each found before a model loads where it can be."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion.export import read_lora_metadata
from ether_diffusion.models.tiny import tiny_components, tiny_pipeline
from ether_diffusion.models.unet_configs import TINY_UNET, build_unet
from ether_diffusion.training.cli import run_cli
from tests.core.helpers import unet_inputs

from .helpers import ether_pipeline, lora_pipeline, peft_lora_pipeline, relative, unet_out

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("_export_script", REPO / "scripts" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv):
    script = _script()
    return script.main(script.parse_args([str(a) for a in argv]))


def one_line(capsys, argv, after_progress_bars=False) -> str:
    """The error line (exit status 2); alone on stderr, or after diffusers' loading progress bars."""
    script = _script()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: script.main(script.parse_args([str(a) for a in argv])))
    err = capsys.readouterr().err.strip()
    if after_progress_bars:
        err = err.splitlines()[-1]
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


def adapter_folder(folder, method):
    """An adapter as train_dreambooth.py leaves it: the weights, and train_config.yaml naming the base model."""
    ed.save_ether(ether_pipeline(method).unet, folder)
    (folder / "train_config.yaml").write_text("pretrained_model_name_or_path: tiny\n")
    return folder


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return adapter_folder(tmp_path_factory.mktemp("export") / "adapter", "ether_plus")


@pytest.fixture
def no_model_loads(monkeypatch):
    monkeypatch.setattr("ether_diffusion.models.loading.tiny_pipeline",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("a model was loaded")))


def reference(adapter):
    pipe = tiny_pipeline()
    ed.load_ether(pipe.unet, adapter)
    return unet_out(pipe)


def test_lora_kohya(adapter, tmp_path, capsys):
    out = tmp_path / "dog.safetensors"
    assert run(["--adapter", adapter, "--to", "lora-kohya", "--output", out]) == out
    printed = capsys.readouterr().out
    assert "base model 'tiny' (recorded in" in printed and "rank-16 LoRA (kohya keys, fp32)" in printed
    meta = read_lora_metadata(out)
    assert meta["base_model"] == "tiny" and meta["method"] == "ether_plus" and meta["rank"] == "16"
    assert relative(unet_out(lora_pipeline(out)), reference(adapter)) < 1e-5
    # --overwrite replaces the file; fp16 halves it
    size = out.stat().st_size
    run(["--adapter", adapter, "--to", "lora-diffusers", "--output", out, "--overwrite", "--dtype", "fp16"])
    assert read_lora_metadata(out)["lora_format"] == "diffusers" and out.stat().st_size < 0.6 * size


PLAIN_DIFFUSERS = """
import sys, torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
inputs = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(pipe.unet(**inputs).sample, sys.argv[3])
assert not [m for m in sys.modules if m.startswith("ether_diffusion")]
"""


def test_merged_loads_without_ether_diffusion(adapter, tmp_path):
    out = tmp_path / "merged"
    run(["--adapter", adapter, "--to", "merged", "--output", out])
    torch.save(unet_inputs(), tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # diffusers alone, not this checkout
    done = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS, str(out), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=dict(env, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert relative(torch.load(tmp_path / "out.pt"), reference(adapter)) < 1e-5
    # a second export over it needs --overwrite, which replaces the pipeline folder
    (out / "stale.txt").write_text("old")
    run(["--adapter", adapter, "--to", "merged", "--output", out, "--overwrite"])
    assert (out / "model_index.json").is_file() and not (out / "stale.txt").exists()


def test_errors_before_a_model_loads(adapter, tmp_path, capsys, no_model_loads):
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"")
    err = one_line(capsys, ["--adapter", adapter, "--to", "lora-kohya", "--output", out])
    assert "exists; pass --overwrite" in err
    err = one_line(capsys, ["--adapter", adapter, "--to", "lora-comfy", "--output", tmp_path / "y.safetensors"])
    assert "to='lora-comfy' is not allowed" in err and "lora-kohya" in err
    err = one_line(capsys, ["--adapter", adapter, "--to", "lora-kohya", "--output", tmp_path / "y.pt"])
    assert "must end in .safetensors" in err
    (tmp_path / "notes").mkdir()
    err = one_line(capsys, ["--adapter", adapter, "--to", "merged", "--output", tmp_path / "notes", "--overwrite"])
    assert "not a diffusers pipeline" in err
    oft = adapter_folder(tmp_path / "oft", "oft")
    err = one_line(capsys, ["--adapter", oft, "--to", "lora-diffusers", "--output", tmp_path / "y.safetensors"])
    assert "oft has no exact low-rank form: pass --rank" in err
    err = one_line(capsys, ["--adapter", tmp_path / "missing", "--to", "merged", "--output", tmp_path / "m"])
    assert "missing" in err
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "m").exists()


def lora_folder(folder):
    """A PEFT LoRA adapter as train_dreambooth.py --method lora leaves it; returns (folder, its UNet output)."""
    from ether_diffusion.training.adapters import save_adapter

    pipe = peft_lora_pipeline()
    save_adapter(pipe.unet, "lora", folder)
    (folder / "train_config.yaml").write_text("pretrained_model_name_or_path: tiny\n")
    return folder, unet_out(pipe)


def test_adapter_and_base_model_shapes_differ(adapter, tmp_path, capsys):
    parts = tiny_components()
    parts["unet"] = build_unet(dict(TINY_UNET, block_out_channels=[64, 64]))
    other = tmp_path / "other"
    type(tiny_pipeline())(**parts, safety_checker=None, feature_extractor=None,
                          requires_safety_checker=False).save_pretrained(other)
    err = one_line(capsys, ["--adapter", adapter, "--pretrained_model_name_or_path", other, "--to", "lora-kohya",
                            "--output", tmp_path / "y.safetensors"], after_progress_bars=True)
    assert "was saved with (out, in) = (32, 32) but this model has (64, 64)" in err
    lora, _ = lora_folder(tmp_path / "lora")
    err = one_line(capsys, ["--adapter", lora, "--pretrained_model_name_or_path", other, "--to", "lora-kohya",
                            "--output", tmp_path / "y.safetensors"], after_progress_bars=True)
    assert "does not fit this UNet (size mismatch for" in err and "pass the base model it was trained on" in err
    assert not (tmp_path / "y.safetensors").exists()


def test_a_lora_adapter_is_rekeyed(tmp_path, capsys):
    lora, want = lora_folder(tmp_path / "lora")
    out = tmp_path / "lora.safetensors"
    err = one_line(capsys, ["--adapter", lora, "--to", "lora-kohya", "--output", out, "--rank", "8"])
    assert "drop --rank" in err
    run(["--adapter", lora, "--to", "lora-kohya", "--output", out])
    assert read_lora_metadata(out)["method"] == "lora"
    assert relative(unet_out(lora_pipeline(out)), want) < 1e-5


def test_oft_with_a_rank(tmp_path, capsys):
    oft = adapter_folder(tmp_path / "oft", "oft")
    out = tmp_path / "oft.safetensors"
    run(["--adapter", oft, "--to", "lora-diffusers", "--output", out, "--rank", "64"])
    assert "worst relative error" in capsys.readouterr().out
    assert float(read_lora_metadata(out)["max_relative_error"]) < 1e-6
    assert relative(unet_out(lora_pipeline(out)), reference(oft)) < 1e-5
