"""ADE20K SceneParse150 (`ADEChallengeData2016`): class names, palette, and where annotations and images live.

Names and palette: mmsegmentation `ADE20KDataset.METAINFO` (`mmseg/datasets/ade.py` @ 088894bd), listed by train id
(= annotation pixel value - 1; pixel 0 is "other" and ignored, mmseg's `reduce_zero_label=True`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from eval.errors import EvalInputError

ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
    'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
    'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher',
    'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
    'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',
)

ADE20K_PALETTE = (  # RGB per train id
    [120,120,120], [180,120,120], [6,230,230], [80,50,50], [4,200,3], [120,120,80], [140,140,140], [204,5,255],
    [230,230,230], [4,250,7], [224,5,255], [235,255,7], [150,5,61], [120,120,70], [8,255,51], [255,6,82],
    [143,255,140], [204,255,4], [255,51,7], [204,70,3], [0,102,200], [61,230,250], [255,6,51], [11,102,255],
    [255,7,71], [255,9,224], [9,7,230], [220,220,220], [255,9,92], [112,9,255], [8,255,214], [7,255,224],
    [255,184,6], [10,255,71], [255,41,10], [7,255,255], [224,255,8], [102,8,255], [255,61,6], [255,194,7],
    [255,122,8], [0,255,20], [255,8,41], [255,5,153], [6,51,255], [235,12,255], [160,150,20], [0,163,255],
    [140,140,140], [250,10,15], [20,255,0], [31,255,0], [255,31,0], [255,224,0], [153,255,0], [0,0,255],
    [255,71,0], [0,235,255], [0,173,255], [31,0,255], [11,200,200], [255,82,0], [0,255,245], [0,61,255],
    [0,255,112], [0,255,133], [255,0,0], [255,163,0], [255,102,0], [194,255,0], [0,143,255], [51,255,0],
    [0,82,255], [0,255,41], [0,255,173], [10,0,255], [173,255,0], [0,255,153], [255,92,0], [255,0,255],
    [255,0,245], [255,0,102], [255,173,0], [255,0,20], [255,184,184], [0,31,255], [0,255,61], [0,71,255],
    [255,0,204], [0,255,194], [0,255,82], [0,10,255], [0,112,255], [51,0,255], [0,194,255], [0,122,255],
    [0,255,163], [255,153,0], [0,255,10], [255,112,0], [143,255,0], [82,0,255], [163,255,0], [255,235,0],
    [8,184,170], [133,0,255], [0,255,92], [184,0,255], [255,0,31], [0,184,255], [0,214,255], [255,0,112],
    [92,255,0], [0,224,255], [112,224,255], [70,184,160], [163,0,255], [153,0,255], [71,255,0], [255,0,163],
    [255,204,0], [255,0,143], [0,255,235], [133,255,0], [255,0,235], [245,0,255], [255,0,122], [255,245,0],
    [10,190,212], [214,255,0], [0,204,255], [20,0,255], [255,255,0], [0,153,255], [0,41,255], [0,255,204],
    [41,0,255], [41,255,0], [173,0,255], [0,245,255], [71,0,255], [122,0,255], [0,255,184], [0,92,255],
    [184,255,0], [0,133,255], [255,214,0], [25,194,194], [102,255,0], [92,0,255],
)


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
