"""ADE20K SceneParse150 (`ADEChallengeData2016`): class names, palette, and where annotations and images live.

Names and palette: the package's one copy, ``ether_diffusion/assets/ade20k_classes.json`` (mmsegmentation's
`ADE20KDataset.METAINFO`, `mmseg/datasets/ade.py` @ 088894bd; sources in its ATTRIBUTION.md), read by the light
`ether_diffusion.assets` and listed here by train id (= annotation pixel value - 1; pixel 0 is "other" and ignored,
mmseg's `reduce_zero_label=True`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ether_diffusion.assets import ade20k_classes
from eval.errors import EvalInputError

ADE20K_CLASSES = tuple(c["name"] for c in ade20k_classes())
ADE20K_PALETTE = tuple(tuple(c["color"]) for c in ade20k_classes())  # RGB


def annotation_dirs(ade_root: str | Path) -> list[Path]:
    """Folders that may hold annotation PNGs: <root>/annotations/validation, <root>/annotations, <root>."""
    root = Path(ade_root)
    return [d for d in (root / "annotations" / "validation", root / "annotations", root) if d.is_dir()]


def resolve_condition(condition: str, manifest_dir: Path, ade_root: str | Path, image: Path | None = None) -> Path:
    """The annotation file a manifest's `condition` names: absolute, relative to the manifest, or under ade_root.

    `image` (the generated image itself) is never taken for its own condition, e.g. when both are named
    ADE_val_00000001.png and the condition is given by file name only.
    """
    raw = Path(condition).expanduser()
    candidates = [raw] if raw.is_absolute() else [manifest_dir / raw, Path(ade_root) / raw]
    candidates += [d / raw.name for d in annotation_dirs(ade_root)]
    for path in candidates:
        if path.is_file() and (image is None or path.resolve() != Path(image).resolve()):
            return path.resolve()
    raise EvalInputError(f"condition '{condition}' not found (looked next to the manifest and under {ade_root}); "
                         "give the annotation PNG's path")


def reference_image(annotation: Path, ade_root: str | Path, fid_reference: str | Path | None = None) -> Path | None:
    """The original val image of an annotation (ADE_val_X.png -> images/validation/ADE_val_X.jpg), if present."""
    root = Path(ade_root)
    folders = [Path(fid_reference)] if fid_reference else [root / "images" / "validation", root / "images",
                                                           root.parent.parent / "images" / "validation"]
    for folder in folders:
        for suffix in (".jpg", ".jpeg", ".png"):
            path = folder / (annotation.stem + suffix)
            if path.is_file():
                return path.resolve()
    return None


def read_annotation(path: str | Path, num_classes: int) -> np.ndarray:
    """(H, W) int64 class ids 0..num_classes from a single-channel PNG; other values raise."""
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise EvalInputError(f"annotation '{path}' has mode {img.mode}; expected a single-channel PNG of class ids")
        label = np.array(img).astype(np.int64)
    if label.ndim != 2 or label.min() < 0 or label.max() > num_classes:
        raise EvalInputError(f"annotation '{path}' has values outside 0..{num_classes}; is it an ADE20K annotation?")
    return label


def colorize(train_ids: np.ndarray, ignore_index: int = 255) -> Image.Image:
    """(H, W) train ids -> RGB image in the mmseg palette (ignored pixels black)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(ADE20K_PALETTE)] = np.array(ADE20K_PALETTE, dtype=np.uint8)
    palette[ignore_index] = 0
    return Image.fromarray(palette[np.clip(train_ids, 0, 255)])
