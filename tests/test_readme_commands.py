"""The shell blocks marked ``<!-- offline -->`` in the README and in configs/s2i/README.md run as written: every
command parses (fast), and each file's whole sequence runs offline in a scratch folder laid out like a fresh clone
(slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
S2I_README = REPO / "configs" / "s2i" / "README.md"
MARK = "<!-- offline -->"


def offline_commands(readme: Path = README) -> list[str]:
    """The marked blocks' commands in file order, continuation lines joined."""
    blocks = re.findall(re.escape(MARK) + r"\n```bash\n(.*?)```", readme.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_readme_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_offline_commands_parse(monkeypatch):
    from ether_diffusion.typed_config import build_parser
    from eval.cli import COMMANDS

    commands = offline_commands()
    assert len(commands) >= 4 and README.read_text().count(MARK) >= 2
    commands += offline_commands(S2I_README)
    assert S2I_README.read_text().count(MARK) == 1
    monkeypatch.chdir(REPO)
    parsed = 0
    for command in commands:
        words = shlex.split(command)
        if words[:2] == ["python", "-m"] and words[2] == "eval":
            build_parser(COMMANDS[words[3]][0]).parse_args(words[4:])  # its folders exist once the steps ran
        elif words[0] == "python":
            script = Path(words[1])
            assert script.parent == Path("scripts") and (REPO / script).is_file(), command
            _script(script.stem).parse_args(words[2:])
        else:
            assert words[0] == "printf", f"unexpected command in an offline block: {command}"
            continue
        parsed += 1
    assert parsed >= 7


def run_offline(readme: Path, folder: Path) -> None:
    """Every marked command of ``readme`` in ``folder`` (the repository's inputs linked in), each exiting 0."""
    for name in ("scripts", "configs", "ether_diffusion", "tests"):  # what the commands read; they write into folder
        (folder / name).symlink_to(REPO / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for command in offline_commands(readme):
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_s2i_readme_offline_commands_run(tmp_path):
    run_offline(S2I_README, tmp_path)
    assert (tmp_path / "runs" / "s2i-tiny" / "ether" / "model" / "control_encoder.safetensors").is_file()
    rows = (tmp_path / "samples" / "s2i-tiny" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 4
    metrics = json.loads((tmp_path / "eval_out" / "s2i-tiny" / "metrics.json").read_text())
    assert "miou" in json.dumps(metrics).lower()


@pytest.mark.slow
def test_readme_offline_commands_run(tmp_path):
    run_offline(README, tmp_path)

    runs = tmp_path / "runs"
    assert (runs / "dog-ether-tiny" / "adapter" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (runs / "samples-tiny" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and {r["base_model"] for r in rows} == {"tiny"}
    assert all((runs / "samples-tiny" / r["path"]).is_file() for r in rows)
    metrics = json.loads((runs / "eval-tiny" / "metrics.json").read_text())
    means = next(iter(metrics["results"].values()))["means"]
    assert all(isinstance(means[k], float) for k in ("dino", "clip_i", "clip_t", "lpips"))
    assert (runs / "eval-tiny" / "report.md").is_file()
    mixed = [json.loads(line) for line in (runs / "samples-mixed" / "manifest.jsonl").read_text().splitlines()]
    assert [r["adapter"] for r in mixed] == ["runs/dog-ether-tiny/adapter"] * 2 + [None]
    assert all((runs / "samples-mixed" / r["path"]).is_file() for r in mixed)
