"""`python -m eval {dreambooth,s2i,fid}` / `ether-eval`: options come from the config dataclasses' fields.

Precedence: dataclass defaults (the published protocols) < `--config file.yaml` < flags given on the command line.
Launch with `accelerate launch -m eval ...` to split the images over several GPUs / processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any, Callable, Sequence

from eval.config import (DreamBoothEvalConfig, FIDEvalConfig, S2IEvalConfig, config_from_dict, load_yaml)
from eval.errors import EvalInputError, ModelNotAvailableError

COMMANDS: dict[str, tuple[type, str]] = {
    "dreambooth": (DreamBoothEvalConfig, "DINO, CLIP-I, CLIP-T, LPIPS on DreamBooth subjects (OFT protocol)"),
    "s2i": (S2IEvalConfig, "mIoU / aAcc / mAcc of a segmenter on generated ADE20K images, and FID"),
    "fid": (FIDEvalConfig, "FID between two folders (torch-fidelity InceptionV3)"),
}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hint: Any) -> None:
    flag = "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif typing.get_origin(base) is tuple:
        parser.add_argument(flag, nargs="+", **kw)
    else:
        parser.add_argument(flag, type=base, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ether-eval", description="Score generated images the way the papers do (DreamBooth, ADE20K S2I, FID).",
        epilog="Defaults are the published protocols; see configs/eval/*.yaml. Weights: hub ids, local folders, "
               "HF_HUB_OFFLINE / TORCH_HOME caches, or explicit paths.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", default=None, help="YAML file of options (see configs/eval/)")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            _add_field(p, f, hints[f.name])
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, Any]:
    """argv -> (command, validated config)."""
    ns = vars(build_parser().parse_args(argv))
    command, config_path = ns.pop("command"), ns.pop("config")
    values = load_yaml(config_path) if config_path else {}
    values.update(ns)
    return command, config_from_dict(COMMANDS[command][0], values, source=config_path or "command line")


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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        command, cfg = parse_args(argv)
        run(command, cfg)
    except (EvalInputError, ModelNotAvailableError) as err:
        print(f"ether-eval: error: {err}", file=sys.stderr)
        return 2
    return 0
