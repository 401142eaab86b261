"""`python -m eval {dreambooth,s2i,fid}` / `ether-eval`: options come from the config dataclasses' fields.

Precedence: dataclass defaults (the published protocols) < `--config file.yaml` < flags given on the command line.
Launch with `accelerate launch -m eval ...` to split the images over several GPUs / processes.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from ether_diffusion.outputs import check_writable
from ether_diffusion.typed_config import ConfigError, parse_config
from ether_diffusion.user_errors import debug_requested, exit_on_user_error
from eval.config import DreamBoothEvalConfig, FIDEvalConfig, S2IEvalConfig
from eval.errors import EvalInputError, ModelNotAvailableError

PROG = "ether-eval"
COMMANDS: dict[str, tuple[type, str]] = {
    "dreambooth": (DreamBoothEvalConfig, "DINO, CLIP-I, CLIP-T, LPIPS on DreamBooth subjects (OFT protocol)"),
    "s2i": (S2IEvalConfig, "mIoU / aAcc / mAcc of a segmenter on generated ADE20K images, and FID"),
    "fid": (FIDEvalConfig, "FID between two folders (torch-fidelity InceptionV3)"),
}
USAGE = (f"usage: {PROG} {{{','.join(COMMANDS)}}} [--config FILE] [--option value ...]\n\n"
         "Score generated images the way the papers do (DreamBooth, ADE20K S2I, FID).\n\n"
         + "".join(f"  {name:<11} {text}\n" for name, (_, text) in COMMANDS.items())
         + f"\n`{PROG} COMMAND --help` lists a command's options. Defaults are the published protocols; see "
           "configs/eval/*.yaml. Weights: hub ids, local folders, HF_HUB_OFFLINE / TORCH_HOME caches, or explicit "
           "paths.\n")


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, Any]:
    """argv -> (command, validated config): the command, then its config's flags (the shared config system)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{PROG}: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    cls, text = COMMANDS[command]
    return command, parse_config(cls, rest, description=text, prog=f"{PROG} {command}")


def _runner(command: str) -> Callable[[Any], dict[str, Any]]:
    if command == "dreambooth":
        from eval.dreambooth import evaluate_dreambooth

        return evaluate_dreambooth
    if command == "s2i":
        from eval.s2i import evaluate_s2i

        return evaluate_s2i
    from eval.fid_folders import evaluate_fid

    return evaluate_fid


def run(command: str, cfg: Any) -> dict[str, Any]:
    """Score, then (main process only) write metrics.json, report.md and grid.png to cfg.out."""
    from eval.distributed import is_main, state
    from eval.report import write_outputs

    check_writable(cfg.out, "--out")  # before any image is scored
    payload = _runner(command)(cfg)
    if is_main():
        grid_rows = getattr(cfg, "grid_subjects", getattr(cfg, "grid_images", 6))
        paths = write_outputs(payload, cfg.out, grid_rows, getattr(cfg, "grid_images", 4))
        if payload.get("warning"):
            print(payload["warning"])
        for method, result in payload["results"].items():
            means = result.get("means", {k: result.get(k) for k in ("mIoU", "aAcc", "mAcc", "fid")})
            shown = ", ".join(f"{k}={v:.4f}" for k, v in means.items() if isinstance(v, float))
            print(f"{method}: {shown}")
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if state().num_processes > 1:
        state().wait_for_everyone()
        state().destroy_process_group()
    return payload


def user_errors() -> tuple[type[BaseException], ...]:
    return ConfigError, EvalInputError, ModelNotAvailableError, FileNotFoundError, NotADirectoryError, PermissionError


def main(argv: Sequence[str] | None = None) -> int:
    """0 on success; a user error is one ``ether-eval: error: ...`` line and 2 (``--debug`` / ``ETHER_DEBUG=1``:
    the traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        exit_on_user_error(lambda: run(*parse_args(argv)), user_errors, debug=debug, prefix=f"{PROG}: error: ")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0
