"""Every script: a user's mistake is one ``error: ...`` line and exit status 2, found before any model loads;
``--debug`` / ``ETHER_DEBUG=1`` give the traceback; under ``accelerate launch`` the script's line comes through."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ether_diffusion.assets import DREAMBOOTH_ROOT
from ether_diffusion.training.cli import run_cli
from ether_diffusion.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
DOG = DREAMBOOTH_ROOT / "dog"
ADE20K = REPO / "tests" / "assets" / "ade20k"
UNWRITABLE = "/proc/ether-diffusion-test/run"  # /proc takes no new files, not even from root


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_errors_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Any base-model load fails the test: the checks must come first."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.delenv("ETHER_DEBUG", raising=False)
    monkeypatch.setattr("ether_diffusion.models.loading.tiny_pipeline",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("a model was loaded")))
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _one_line(capsys, script: str, argv: list[str]) -> str:
    mod = _script(script)
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: mod.main(mod.parse_args(argv)))
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


def _argv(script: str, out: str) -> list[str]:
    tiny = ["--pretrained_model_name_or_path", "tiny"]
    return {
        "train_dreambooth": [*tiny, "--instance_data_dir", str(DOG), "--instance_prompt", "a qwe dog",
                             "--report_to", "none", "--output_dir", out],
        "train_s2i": [*tiny, "--data_root", str(ADE20K), "--train_split", "validation", "--prompt", "",
                      "--report_to", "none", "--output_dir", out],
        "generate": [*tiny, "--prompts", "a dog", "--output_dir", out],
        "generate_s2i": [*tiny, "--model", str(REPO), "--annotations", str(ADE20K / "annotations" / "validation"),
                         "--prompt", "", "--output_dir", out],
        "robustness_study": [*tiny, "--methods", "ether", "--learning_rates", "1e-3", "--output_dir", out],
        "export": [*tiny, "--adapter", str(REPO), "--to", "merged", "--output", out],
    }[script]


@pytest.mark.parametrize("script", ["train_dreambooth", "train_s2i", "generate", "generate_s2i", "robustness_study",
                                    "export"])
def test_output_path_checked_first(script, tmp_path, capsys):
    (tmp_path / "good.jpg").write_bytes(b"\xff\xd8")
    err = _one_line(capsys, script, _argv(script, str(tmp_path / "good.jpg" / "run")))
    assert "good.jpg" in err and "is a file" in err
    err = _one_line(capsys, script, _argv(script, UNWRITABLE))
    assert "is not writable" in err and "/proc" in err
    assert not (tmp_path / "run").exists()


def test_eval_out_checked_first(tmp_path, capsys, monkeypatch):
    from eval import cli

    monkeypatch.setattr(cli, "_runner", lambda command: pytest.fail("scored before checking --out"))
    (tmp_path / "good.jpg").write_bytes(b"\xff\xd8")
    for out, words in ((tmp_path / "good.jpg" / "out", "is a file"), (UNWRITABLE, "is not writable")):
        code = cli.main(["fid", "--generated", str(DOG), "--reference", str(DOG), "--random-init", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("ether-eval: error: --out") and "\n" not in err and words in err, err


def test_bad_options_are_one_line(tmp_path, capsys, monkeypatch):
    err = _one_line(capsys, "robustness_study", ["--methods", "foo", "--output_dir", str(tmp_path)])
    assert "foo" in err and "choose from" in err
    monkeypatch.undo()  # n_blocks is checked against the model's layers: this one loads the tiny model
    err = _one_line(capsys, "train_dreambooth", [*_argv("train_dreambooth", str(tmp_path / "run")), "--n_blocks", "3",
                                                  "--max_train_steps", "1", "--resolution", "64"])
    assert "n_blocks=3 does not divide" in err and "choose a divisor" in err


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    mod = _script("robustness_study")
    argv = ["--methods", "foo", "--output_dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["robustness_study.py", *argv, "--debug"])
    with pytest.raises(ConfigError, match="foo"):
        run_cli(lambda: mod.main(mod.parse_args()))
    assert sys.argv == ["robustness_study.py", *argv]  # taken out before the script's own parser sees it
    monkeypatch.setattr(sys, "argv", ["robustness_study.py"])
    monkeypatch.setenv("ETHER_DEBUG", "1")
    with pytest.raises(ConfigError, match="foo"):
        run_cli(lambda: mod.main(mod.parse_args(argv)))


@pytest.mark.slow
def test_accelerate_launch_passes_the_line_through(tmp_path):
    (tmp_path / "good.jpg").write_bytes(b"\xff\xd8")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    script = [str(SCRIPTS / "generate.py"), "--pretrained_model_name_or_path", "tiny", "--prompts", "a dog",
              "--output_dir", str(tmp_path / "good.jpg" / "run")]
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])  # this checkout's package
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    quiet = subprocess.run([*launch, "-q", *script], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    # the script's own line and nothing else (without -q the launcher adds its CalledProcessError report after it)
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert quiet.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: output_dir"), quiet.stderr


def test_eval_user_error_comes_back_as_one_line(tmp_path):
    from ether_diffusion.dreambooth.evaluate import evaluate_samples

    with pytest.raises(ConfigError) as caught:
        evaluate_samples(tmp_path, "", tmp_path / "o", "qwe", tiny=True)
    assert str(caught.value).startswith("evaluation: real folder is required; pass --real")
    assert "\n" not in str(caught.value)
