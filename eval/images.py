"""Image files in, tensors out: the only place that opens images, so every metric sees the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.errors import EvalInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def load_rgb(path: str | Path) -> Image.Image:
    """Open `path` as 8-bit RGB (palette, grey and RGBA images are converted; alpha is dropped)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise EvalInputError(f"cannot read image '{path}' ({err}); replace or remove it") from None


def check_readable(paths: list[Path] | tuple[Path, ...], what: str) -> None:
    """Open every image's header (no decoding of the pixels): a corrupt or missing file fails here, before any model
    runs, with one `EvalInputError` naming it."""
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, ValueError, SyntaxError) as err:
            raise EvalInputError(f"cannot read {what} image '{path}' ({err}); replace or remove it") from None


def is_all_black(path: str | Path) -> bool:
    """True when every pixel of every channel is 0 (what a diffusers safety checker returns)."""
    return all(high == 0 for _, high in load_rgb(path).getextrema())


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def subject_images(real_root: str | Path, subject: str) -> list[Path]:
    """The real images of one DreamBooth subject (`real_root/subject/*.jpg`, as the dataset ships them)."""
    folder = Path(real_root) / subject
    if not folder.is_dir():
        raise EvalInputError(f"subject '{subject}' has no folder {folder}; check --real and the manifest's 'subject'")
    paths = list_images(folder)
    if not paths:
        raise EvalInputError(f"subject folder {folder} holds no images")
    return paths


def lpips_input(img: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: PIL bilinear resize to size x size, then (x / 255 - 0.5) / 0.5.

    Same pixels as OFT's `Compose([Resize((512, 512)), ToTensor(), Normalize(0.5, 0.5)])` on a PIL image.
    """
    arr = np.array(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)  # (size, size, 3)
    return (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - 0.5) / 0.5


def uint8_chw(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8, the input torch-fidelity's Inception expects."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
