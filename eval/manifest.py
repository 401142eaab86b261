"""Read and validate `manifest.jsonl`, the one file that ties generated images to what they were asked to show.

The schema (keys, types, which are required) is `ether_diffusion.manifest`'s, the module the generators write with;
it is light (the standard library and `outputs`), so reading it here loads no training code. Any other key is
ignored. Blank lines are skipped. A bad row raises `EvalInputError` naming the file and line.

    {"path": "dog/000.png", "prompt": "a qwe dog in the jungle", "seed": 0, "method": "ether", "subject": "dog",
     "prompt_index": 0}
    {"path": "ade/ADE_val_00000001.png", "prompt": "a house", "seed": 0, "method": "ether",
     "condition": "annotations/validation/ADE_val_00000001.png"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ether_diffusion.manifest import MANIFEST_NAME, OPTIONAL, REQUIRED, has_type
from eval.errors import EvalInputError


@dataclass(frozen=True)
class ManifestRow:
    """One generated image. `path` is resolved to an absolute path; `condition` is kept as written."""

    path: Path
    prompt: str
    seed: int
    method: str
    line: int
    subject: str | None = None
    prompt_index: int | None = None
    condition: str | None = None


def _checked(value: object, key: str, kind: type, where: str) -> object:
    if not has_type(value, kind):
        raise EvalInputError(f"{where}: key '{key}' must be {kind.__name__}, got {value!r}; fix that row")
    return value


def parse_row(obj: object, folder: Path, line: int, where: str, require: tuple[str, ...] = ()) -> ManifestRow:
    """One decoded JSON line -> `ManifestRow`; `require` lists optional keys this protocol needs."""
    if not isinstance(obj, dict):
        raise EvalInputError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
    for key in (*REQUIRED, *require):
        if key not in obj:
            raise EvalInputError(f"{where}: missing key '{key}'; every row needs {sorted({*REQUIRED, *require})}")
    fields = {k: _checked(obj[k], k, t, where) for k, t in REQUIRED.items()}
    fields |= {k: _checked(obj[k], k, t, where) for k, t in OPTIONAL.items() if obj.get(k) is not None}
    path = Path(fields["path"]).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise EvalInputError(f"{where}: image '{fields['path']}' not found (looked at {path})")
    return ManifestRow(**{**fields, "path": path.resolve()}, line=line)


def read_manifest(manifest: str | Path, require: tuple[str, ...] = ()) -> list[ManifestRow]:
    """Read `manifest` (a .jsonl file, or a folder holding `manifest.jsonl`) into validated rows, in file order."""
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / MANIFEST_NAME
    if not manifest.is_file():
        raise EvalInputError(f"manifest '{manifest}' not found; write one row per image "
                             "(see ether_diffusion/manifest.py)")
    rows: list[ManifestRow] = []
    seen: dict[Path, int] = {}
    for number, text in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"{where}: not valid JSON ({err.msg}); fix that line") from None
        row = parse_row(obj, manifest.parent, number, where, require)
        if row.path in seen:
            raise EvalInputError(f"{where}: image '{row.path}' already listed on line {seen[row.path]}")
        seen[row.path] = number
        rows.append(row)
    if not rows:
        raise EvalInputError(f"manifest '{manifest}' has no rows; nothing to score")
    return rows
