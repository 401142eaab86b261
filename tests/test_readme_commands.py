"""The README's shell blocks marked ``<!-- offline -->`` run as written: every command parses (fast), and the whole
sequence runs offline in a scratch folder laid out like a fresh clone (slow)."""

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
MARK = "<!-- offline -->"


def offline_commands() -> list[str]:
    """The marked blocks' commands in README order, continuation lines joined."""
    blocks = re.findall(re.escape(MARK) + r"\n```bash\n(.*?)```", README.read_text(), flags=re.S)
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
    assert parsed >= 4


@pytest.mark.slow
def test_readme_offline_commands_run(tmp_path):
    for folder in ("scripts", "configs", "ether_diffusion"):  # what the commands read; they write into tmp_path
        (tmp_path / folder).symlink_to(REPO / folder)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for command in offline_commands():
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"

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
