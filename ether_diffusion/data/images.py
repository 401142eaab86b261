"""Robust image-folder reading for training data: any size, any mode, broken files skipped with a warning.

`scan_images` lists the images of a folder that really decode (naming every file it skips; failing if none remain),
`load_rgb` opens one as RGB (EXIF rotation applied; alpha composited on white; grey / palette / CMYK / 16-bit
converted), `resize_and_crop` makes it ``resolution`` x ``resolution``, `to_tensor` maps it to [-1, 1].
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# files that are never images and never worth a warning
_IGNORED = {".ds_store", "thumbs.db", "desktop.ini"}


class ImageDataError(ValueError):
    """A data folder is missing, empty, or holds no image that decodes."""


class SkippedImageWarning(UserWarning):
    """Some files of a data folder are not decodable images and were skipped."""


def _decodes(path: Path) -> str | None:
    """None if ``path`` is a decodable image, else why not."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return type(e).__name__


def scan_images(folder: str | Path, what: str = "image") -> list[Path]:
    """The decodable images directly in ``folder``, sorted by name. ``what`` names the folder in messages."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ImageDataError(f"{what} folder {str(folder)!r} does not exist; pass a folder of images")
    if not folder.is_dir():
        raise ImageDataError(f"{what} folder {str(folder)!r} is a file, not a folder; pass the folder holding the images")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _IGNORED)
    if not files:
        raise ImageDataError(f"{what} folder {str(folder)!r} is empty; put the images (jpg, png, ...) there")
    good, bad = [], []
    for p in files:
        reason = _decodes(p)
        (bad if reason else good).append(p if not reason else f"{p.name} ({reason})")
    if bad:
        warnings.warn(f"skipping {len(bad)} file(s) of {what} folder {str(folder)!r} that are not decodable images: "
                      + ", ".join(bad), SkippedImageWarning, stacklevel=2)
    if not good:
        raise ImageDataError(f"{what} folder {str(folder)!r} has no decodable image ({len(bad)} file(s) skipped); "
                             "add jpg / png / webp images")
    return good


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB image: EXIF orientation applied, transparency composited on white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)  # 16/32-bit grey -> 8-bit
            im = Image.fromarray((arr * (255.0 / max(arr.max(), 1.0))).astype(np.uint8))
        elif im.mode == "F":
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))
        return im.convert("RGB")


def crop_box(size: tuple[int, int], resolution: int, center_crop: bool = True,
             rng: random.Random | None = None) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized width, height), crop box of `resize_and_crop` for an image of ``size``; a random crop draws two
    numbers from ``rng`` (also when the image is square and the crop is the whole image)."""
    w, h = size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if center_crop or rng is None:
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
    else:
        left, top = rng.randint(0, nw - resolution), rng.randint(0, nh - resolution)
    return (nw, nh), (left, top, left + resolution, top + resolution)


def fixed_crop(size: tuple[int, int], resolution: int, center_crop: bool) -> bool:
    """Whether `resize_and_crop` gives the same pixels whatever the random crop (centre crop, or a square image)."""
    (nw, nh), _ = crop_box(size, resolution)
    return center_crop or (nw, nh) == (resolution, resolution)


def resize_and_crop(im: Image.Image, resolution: int, center_crop: bool = True,
                    rng: random.Random | None = None) -> Image.Image:
    """Shorter side -> ``resolution`` (bilinear), then a centre or random ``resolution`` square crop."""
    (nw, nh), box = crop_box(im.size, resolution, center_crop, rng)
    return im.resize((nw, nh), Image.BILINEAR).crop(box)


def to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)
    return arr.permute(2, 0, 1).float().div(127.5).sub(1.0)
