"""``--help`` of every script and of ``python -m eval`` answers without importing torch, diffusers, transformers or
accelerate (the heavy imports come after the flags are read, so help is immediate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_dreambooth", "generate", "train_s2i", "generate_s2i", "demo", "robustness_study", "export")
EVAL_COMMANDS = ((), ("dreambooth",), ("s2i",), ("fid",))
HEAVY = ("torch", "diffusers", "transformers", "accelerate")

# One interpreter runs every --help in turn and records, after each, which heavy modules are loaded: a module that
# shows up first after command k was imported by command k.
PROBE = """
import contextlib, io, json, runpy, sys
heavy, seen = {heavy!r}, {{}}
def run(name, argv, target, module):
    sys.argv, out = argv, io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            (runpy.run_module if module else runpy.run_path)(target, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        else:
            code = None
    seen[name] = dict(code=code, help=out.getvalue(), heavy=[m for m in heavy if m in sys.modules])
for script in {scripts!r}:
    path = {scripts_dir!r} + "/" + script + ".py"
    run(script, [path, "--help"], path, False)
for command in {commands!r}:
    run(" ".join(("eval", *command)), ["eval", *command, "--help"], "eval", True)
print(json.dumps(seen))
"""


def test_help_imports_no_heavy_module():
    code = PROBE.format(heavy=HEAVY, scripts=SCRIPTS, scripts_dir=str(REPO / "scripts"), commands=EVAL_COMMANDS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert list(seen) == [*SCRIPTS, *(" ".join(("eval", *c)) for c in EVAL_COMMANDS)]
    for name, result in seen.items():
        assert result["code"] == 0, (name, result)
        assert "--output_dir" in result["help"] or "--out" in result["help"] or name == "eval", (name, result["help"])
        assert result["heavy"] == [], f"{name} --help imported {result['heavy']}"
    assert "dreambooth" in seen["eval"]["help"] and "--generated" in seen["eval dreambooth"]["help"]
