"""ADE20K SceneParse150 for semantic-map-to-image (S2I) training: the class palette, colour-coded condition maps,
captions, and a dataset over the official ``ADEChallengeData2016`` layout::

    <root>/images/{training,validation}/ADE_*.jpg         RGB photos
    <root>/annotations/{training,validation}/ADE_*.png    one channel of class ids: 0 = unlabeled, 1..150 = classes

The condition is the colour-coded map (class ``k`` -> its palette colour, unlabeled -> black) in [0, 1], the hint that
ControlNet and OFT feed their control encoders. Captions come from a JSON / JSONL file keyed by image name, or one
fixed prompt. Geometry: ``crop="none"`` resizes photo and map to a square, so every generated pixel maps back to one
annotation pixel (what the mIoU evaluation needs); ``"center"`` / ``"random"`` keep the aspect ratio and crop.
Augmentation is a pure function of ``(seed, epoch, index)``, as in `DreamBoothDataset`.
"""

from __future__ import annotations

import functools
import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..assets import ADE20K_CLASSES_FILE as CLASSES_FILE
from .images import load_rgb, to_tensor

NUM_CLASSES = 150
UNLABELED_COLOR = (0, 0, 0)
CROPS = ("none", "center", "random")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME_KEYS = ("image", "file_name", "filename", "name", "annotation")
_CAPTION_KEYS = ("prompt", "caption", "text")


class ADE20KDataError(ValueError):
    """An ADE20K folder, annotation or caption file that cannot be used as given."""


class SkippedSampleWarning(UserWarning):
    """Some image / annotation pairs were left out (named in the message)."""


# ------------------------------------------------------------------ palette
@functools.lru_cache(maxsize=None)
def load_classes(path: str | Path = CLASSES_FILE) -> tuple[dict, ...]:
    """The 150 classes (id, train_id, name, color) of ``classes.json``, checked to be ids 1..150 in order."""
    rows = tuple(json.loads(Path(path).read_text()))
    if [r["id"] for r in rows] != list(range(1, NUM_CLASSES + 1)):
        raise ADE20KDataError(f"{path} must list the {NUM_CLASSES} ADE20K classes with ids 1..{NUM_CLASSES} in order")
    return rows


@functools.lru_cache(maxsize=None)
def palette(path: str | Path = CLASSES_FILE) -> np.ndarray:
    """(151, 3) uint8: row ``k`` is the colour of class id ``k``; row 0 (unlabeled) is black."""
    colors = [UNLABELED_COLOR] + [tuple(r["color"]) for r in load_classes(path)]
    table = np.array(colors, dtype=np.uint8)
    table.flags.writeable = False
    return table


def _keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # one int per colour


@functools.lru_cache(maxsize=None)
def _color_table(path: str | Path = CLASSES_FILE) -> tuple[np.ndarray, np.ndarray]:
    """(sorted colour keys, id of each): where two classes share a colour the smaller id wins."""
    first: dict[int, int] = {}
    for k, key in enumerate(_keys(palette(path)).tolist()):
        first.setdefault(key, k)
    keys = np.array(sorted(first), dtype=np.int64)
    return keys, np.array([first[k] for k in keys.tolist()], dtype=np.int64)


def ids_to_colors(ids: np.ndarray) -> np.ndarray:
    """(H, W) class ids 0..150 -> (H, W, 3) uint8 colour-coded map."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > NUM_CLASSES):
        raise ADE20KDataError(f"class ids must be in 0..{NUM_CLASSES}, got {int(ids.min())}..{int(ids.max())}")
    return palette()[ids.astype(np.int64)]


def colors_to_ids(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour-coded map -> (H, W) int64 class ids; black -> 0.

    The palette gives ``road`` (7) and ``skyscraper`` (49) the same colour: it converts to 7. A colour that is in no
    class raises, naming it.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ADE20KDataError(f"a colour map needs a last axis of 3 (RGB), got shape {rgb.shape}")
    keys, ids = _color_table()
    query = _keys(rgb)
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    known = keys[pos] == query
    if not known.all():
        bad = rgb[~known][0].tolist()
        raise ADE20KDataError(f"{int((~known).sum())} pixel(s) have colours of no ADE20K class, e.g. {bad}; "
                              "the map must use the 150-class palette (ether_diffusion/assets/ade20k_classes.json)")
    return ids[pos]


def read_annotation(path: str | Path) -> np.ndarray:
    """(H, W) int64 class ids of a single-channel annotation PNG; other modes and ids above 150 raise."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ADE20KDataError(f"annotation {str(path)!r} has mode {im.mode}; expected a single-channel PNG of "
                                  "class ids (ADEChallengeData2016/annotations)")
        ids = np.array(im).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > NUM_CLASSES):
        raise ADE20KDataError(f"annotation {str(path)!r} has class id {int(ids.max())} (above {NUM_CLASSES}); ADE20K "
                              f"SceneParse150 annotations hold 0..{NUM_CLASSES}: is this the full ADE20K dataset?")
    return ids


# ------------------------------------------------------------------ captions
def read_captions(path: str | Path) -> dict[str, str]:
    """A caption file -> {image name (stem) or "#<index>": caption}.

    Accepted: a JSON object ``{"ADE_val_00000001": "a house", ...}`` (keys may be file names or paths); a JSON list
    or JSONL of objects with a name key (``image``, ``file_name``, ``filename``, ``name``, ``annotation``) and a
    caption key (``prompt``, ``caption``, ``text``), e.g. tests/assets/ade20k/captions_oft_blip.jsonl; or OFT's
    released files (``{"source": "source/<i>.png", "prompt": ...}``, entry ``i`` = the split's image ``i + 1``).
    """
    path = Path(path)
    if not path.is_file():
        raise ADE20KDataError(f"caption file {str(path)!r} not found; pass a JSON / JSONL file of captions keyed by "
                              "image name, or --prompt for one fixed prompt")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ADE20KDataError(f"{path}:{number} is not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and any(k in data for k in _CAPTION_KEYS):
        data = [data]  # a JSONL file of one line
    if isinstance(data, dict):
        return {Path(str(k)).stem: str(v) for k, v in data.items()}
    if not isinstance(data, list):
        raise ADE20KDataError(f"{path} must hold a JSON object or a list / JSONL of objects, got {type(data).__name__}")
    out = {}
    for i, row in enumerate(data):
        caption = next((row[k] for k in _CAPTION_KEYS if isinstance(row, dict) and k in row), None)
        name = next((row[k] for k in _NAME_KEYS if isinstance(row, dict) and k in row), None)
        oft = re.fullmatch(r"source/(\d+)\.\w+", str(row.get("source", ""))) if isinstance(row, dict) else None
        if caption is None or (name is None and oft is None):
            raise ADE20KDataError(f"{path}: entry {i + 1} needs a name key ({'/'.join(_NAME_KEYS)}) and a caption key "
                                  f"({'/'.join(_CAPTION_KEYS)}), got {row!r}")
        out[f"#{oft.group(1)}" if oft is not None else Path(str(name)).stem] = str(caption)
    return out


def _caption_of(name: str, captions: dict[str, str]) -> str | None:
    if name in captions:
        return captions[name]
    m = re.fullmatch(r"ADE_\w+?_(\d{8})", name)  # OFT's entry i is ADE_<split>_{i+1:08d}
    return captions.get(f"#{int(m.group(1)) - 1}") if m else None


# ------------------------------------------------------------------ the split
@dataclass(frozen=True)
class ADE20KSample:
    name: str  # e.g. ADE_val_00000001
    image: Path
    annotation: Path
    prompt: str


def _skip(what: str, names: list[str]) -> None:
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    warnings.warn(f"skipping {len(names)} sample(s) {what}: {shown}", SkippedSampleWarning, stacklevel=3)


def _header_problem(image: Path, annotation: Path) -> str | None:
    try:
        with Image.open(image) as im, Image.open(annotation) as ann:
            if ann.mode not in ("L", "P", "I", "I;16"):
                return f"annotation mode {ann.mode}, not one channel of class ids"
            if im.size != ann.size:
                return f"image {im.size[0]}x{im.size[1]} but annotation {ann.size[0]}x{ann.size[1]}"
    except OSError as e:
        return f"unreadable ({type(e).__name__})"
    return None


def scan_ade20k(root: str | Path, split: str = "training", captions: str | Path | None = None,
                prompt: str | None = None) -> list[ADE20KSample]:
    """The usable (image, annotation, prompt) samples of ``split``, sorted by name; skipped ones are named in a
    `SkippedSampleWarning`. Without ``captions`` every sample gets ``prompt`` (default "")."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ADE20KDataError(f"ADE20K folder {str(root)!r} does not exist; pass the ADEChallengeData2016 folder "
                              "(holding images/ and annotations/)")
    folders = {kind: root / kind / split for kind in ("images", "annotations")}
    for kind, folder in folders.items():
        if not folder.is_dir():
            found = sorted(p.name for p in (root / kind).iterdir() if p.is_dir()) if (root / kind).is_dir() else []
            raise ADE20KDataError(f"{str(root)!r} has no {kind}/{split} (splits there: {found or 'none'}); expected "
                                  "the ADEChallengeData2016 layout images/{training,validation}, annotations/...")
    images = {p.stem: p for p in folders["images"].iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
    annotations = {p.stem: p for p in folders["annotations"].glob("*.png")}
    if not images:
        raise ADE20KDataError(f"{folders['images']} holds no images (.jpg / .png)")
    if missing := sorted(set(images) - set(annotations)):
        _skip(f"of {split} with no annotation in {folders['annotations']}", missing)
    names, bad = [], []
    for name in sorted(set(images) & set(annotations)):
        problem = _header_problem(images[name], annotations[name])
        (bad.append(f"{name} ({problem})") if problem else names.append(name))
    if bad:
        _skip(f"of {split} whose annotation does not fit the image", bad)
    if captions is None:
        prompts = {n: prompt or "" for n in names}
    else:
        table = read_captions(captions)
        prompts = {n: c for n in names if (c := _caption_of(n, table)) is not None}
        if not prompts:
            raise ADE20KDataError(f"caption file {str(captions)!r} names none of the {len(names)} images of {split} "
                                  f"(its first key is {next(iter(table), 'nothing')!r}); pass the captions of this split")
        if uncaptioned := [n for n in names if n not in prompts]:
            _skip(f"of {split} with no caption in {captions}", uncaptioned)
    if not prompts:
        raise ADE20KDataError(f"no usable image / annotation pair in {root} ({split}); see the warnings above")
    return [ADE20KSample(n, images[n], annotations[n], p) for n, p in prompts.items()]


def scan_annotations(folder: str | Path, captions: str | Path | None = None, prompt: str | None = None,
                     limit: int | None = None) -> list[tuple[str, Path, str]]:
    """(name, annotation path, prompt) for the PNGs of an annotation folder (sorted; the first ``limit``), for
    sampling from maps. Maps with no caption are skipped with a warning; a caption file naming none of them raises."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ADE20KDataError(f"annotation folder {str(folder)!r} does not exist; pass e.g. "
                              "ADEChallengeData2016/annotations/validation")
    paths = sorted(folder.glob("*.png"))[:limit]
    if not paths:
        raise ADE20KDataError(f"annotation folder {str(folder)!r} holds no .png annotation")
    if captions is None:
        return [(p.stem, p, prompt or "") for p in paths]
    table = read_captions(captions)
    rows = [(p.stem, p, c) for p in paths if (c := _caption_of(p.stem, table)) is not None]
    if not rows:
        raise ADE20KDataError(f"caption file {str(captions)!r} names none of the {len(paths)} maps in {folder} (its "
                              f"first key is {next(iter(table), 'nothing')!r}); pass the captions of these maps")
    if len(rows) < len(paths):
        _skip(f"in {folder} with no caption in {captions}", sorted({p.stem for p in paths} - {r[0] for r in rows}))
    return rows


# ------------------------------------------------------------------ geometry
def _box(size: tuple[int, int], resolution: int, crop: str, rng: random.Random | None):
    """(resized width, height), crop box for one photo / map pair."""
    w, h = size
    if crop == "none":
        return (resolution, resolution), (0, 0, resolution, resolution)
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if crop == "random" and rng is not None:
        left, top = rng.randint(0, nw - resolution), rng.randint(0, nh - resolution)
    else:
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return (nw, nh), (left, top, left + resolution, top + resolution)


def condition_tensor(ids: np.ndarray) -> torch.Tensor:
    """(H, W) class ids -> (3, H, W) float32 colour-coded condition in [0, 1]."""
    return torch.from_numpy(ids_to_colors(ids)).permute(2, 0, 1).float().div(255.0)


def load_condition(annotation: str | Path, resolution: int, crop: str = "none") -> torch.Tensor:
    """An annotation PNG -> (3, R, R) condition in [0, 1] (ids resized with nearest neighbour, then coloured)."""
    ann = Image.fromarray(read_annotation(annotation).astype(np.uint8))
    size, box = _box(ann.size, resolution, crop, None)
    return condition_tensor(np.asarray(ann.resize(size, Image.NEAREST).crop(box)))


def load_pair_ids(sample: ADE20KSample, resolution: int, crop: str = "none",
                  rng: random.Random | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(pixels (3, R, R) in [-1, 1], class ids (R, R) uint8) of one sample, the same resize and crop for both."""
    image = load_rgb(sample.image)
    ann = Image.fromarray(read_annotation(sample.annotation).astype(np.uint8))
    size, box = _box(image.size, resolution, crop, rng)
    pixels = to_tensor(image.resize(size, Image.BILINEAR).crop(box))
    return pixels, np.asarray(ann.resize(size, Image.NEAREST).crop(box))


def load_pair(sample: ADE20KSample, resolution: int, crop: str = "none", random_flip: bool = False,
              rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels (3, R, R) in [-1, 1], condition (3, R, R) in [0, 1]) of one sample, the same crop / flip for both."""
    pixels, ids = load_pair_ids(sample, resolution, crop, rng)
    condition = condition_tensor(ids)
    if random_flip and rng is not None and rng.random() < 0.5:
        pixels, condition = pixels.flip(-1), condition.flip(-1)
    return pixels, condition


def color_ids(ids: torch.Tensor) -> torch.Tensor:
    """(B, H, W) integer class ids on any device -> (B, 3, H, W) float32 condition in [0, 1], as `condition_tensor`."""
    table = torch.from_numpy(palette().copy()).to(ids.device)  # (151, 3) uint8
    return table[ids.long()].permute(0, 3, 1, 2).float().div(255.0)


class ADE20KDataset(Dataset):
    """Item i: {"pixels": (3, R, R) in [-1, 1], "condition": (3, R, R) in [0, 1], "prompt": str, "name": str}.

    With ``cached`` an item is {"row": int} instead: sample i in its orientation (rows ``2i``, ``2i + 1`` with
    ``random_flip``), the row of a cache built from `cache_pairs`; it draws the random numbers a loaded item draws.
    """

    def __init__(self, samples: list[ADE20KSample], resolution: int = 512, crop: str = "none",
                 random_flip: bool = False, seed: int = 0, cached: bool = False):
        if crop not in CROPS:
            raise ADE20KDataError(f"crop={crop!r}; choose one of {CROPS}")
        self.samples, self.resolution, self.crop, self.random_flip = samples, resolution, crop, random_flip
        self.seed, self.cached = seed, cached
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent loader workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def flips(self) -> int:
        return 2 if self.random_flip else 1

    def fixed_crops(self) -> bool:
        """Whether a sample gives the same pixels at every epoch (up to its flip): what a cache needs."""
        return self.crop != "random"

    def cache_pairs(self, indices=None):
        """(sample index, pixels (V, 3, R, R), class ids (V, R, R) uint8) for each sample, V = ``flips`` orientations
        (the mirror image second)."""
        for i in range(len(self.samples)) if indices is None else indices:
            pixels, ids = load_pair_ids(self.samples[i], self.resolution, self.crop)
            ids = torch.from_numpy(ids.copy())
            if self.random_flip:
                pixels, ids = torch.stack([pixels, pixels.flip(-1)]), torch.stack([ids, ids.flip(-1)])
            else:
                pixels, ids = pixels[None], ids[None]
            yield i, pixels, ids

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        if self.cached:
            _box((self.resolution, self.resolution), self.resolution, self.crop, rng)  # draws what a load draws
            flip = self.random_flip and rng.random() < 0.5
            return {"row": i * self.flips + int(flip)}
        sample = self.samples[i]
        pixels, condition = load_pair(sample, self.resolution, self.crop, self.random_flip, rng)
        return {"pixels": pixels, "condition": condition, "prompt": sample.prompt, "name": sample.name}


def collate(examples: list[dict]) -> dict:
    """{"pixels": (B, 3, R, R), "condition": (B, 3, R, R), "prompts": [B str], "names": [B str]}, or {"rows": [B]}
    for a cached dataset."""
    if "row" in examples[0]:
        return {"rows": [e["row"] for e in examples]}
    return {"pixels": torch.stack([e["pixels"] for e in examples]).contiguous(),
            "condition": torch.stack([e["condition"] for e in examples]).contiguous(),
            "prompts": [e["prompt"] for e in examples], "names": [e["name"] for e in examples]}
