"""Run ``python -m eval ...`` in a subprocess (the eval package never shares a process with training code).

A user error there (exit status 2, one ``error:`` line) comes back as a `ConfigError` with that line, so the calling
script reports it in one line too; anything else is a `RuntimeError` with the end of the subprocess's stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..typed_config import ConfigError
from ..user_errors import EXIT_USER_ERROR

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where the `eval` package sits beside `ether_diffusion`


def run_eval(args: list[str]) -> None:
    """``python -m eval <args>``; raises on failure (see the module docstring)."""
    command = [sys.executable, "-m", "eval", *args]
    done = subprocess.run(command, cwd=PACKAGE_ROOT, capture_output=True, text=True)
    if done.returncode == 0:
        return
    lines = [line for line in done.stderr.splitlines() if "error: " in line]
    if done.returncode == EXIT_USER_ERROR and lines:
        raise ConfigError("evaluation: " + lines[-1].split("error: ", 1)[1])
    raise RuntimeError(f"evaluation failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
