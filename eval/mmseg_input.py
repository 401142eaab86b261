"""The segmenter's input and output as mmseg's ADE20K test pipeline has them (the one OFT scores SegFormer with).

Input: the image is rescaled with its aspect ratio kept so that it fits ``(2048, 512)`` (long side <= 2048, short
side <= 512, the larger factor that satisfies both; sides rounded half up), bilinearly without antialiasing on the
uint8 image (OpenCV's ``INTER_LINEAR``, which mmcv uses), normalised with the checkpoint's mean / std, then padded
with zeros at the bottom and right to a multiple of ``size_divisor`` (32).
Output: the logits are resized bilinearly (``align_corners=False``) to the padded input, the padding is cropped off,
and the rest is resized bilinearly to the scoring size before the arg-max.

Images whose padded inputs have the same size share a forward pass; nothing else is padded, so a batch gives the
same labels as one image at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TEST_SCALE = (2048, 512)  # mmseg ADE20K configs: img_scale / scale, keep_ratio=True
SIZE_DIVISOR = 32


@dataclass(frozen=True)
class SegInput:
    """One image prepared for the segmenter: ``pixels`` (3, Hp, Wp), of which the top-left ``resized`` (h, w) is
    the image and the rest zero padding."""

    pixels: torch.Tensor
    resized: tuple[int, int]


def rescaled_size(height: int, width: int, scale: tuple[int, int] = TEST_SCALE) -> tuple[int, int]:
    """(h, w) of an image rescaled with its aspect ratio kept to fit ``scale`` (either order: long, short)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _padded(side: int, divisor: int) -> int:
    return -(-side // divisor) * divisor


def prepare(image: Image.Image, mean: Sequence[float], std: Sequence[float], scale: tuple[int, int] = TEST_SCALE,
            size_divisor: int = SIZE_DIVISOR) -> SegInput:
    """``image`` -> the normalised, padded input of mmseg's test pipeline (see the module docstring)."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
    size = rescaled_size(rgb.shape[1], rgb.shape[2], scale)
    if size != tuple(rgb.shape[1:]):
        resized = F.interpolate(rgb[None].float(), size=size, mode="bilinear", align_corners=False, antialias=False)
        rgb = resized[0].round().clamp(0, 255)  # the uint8 image OpenCV returns
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None] * 255
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None] * 255
    pixels = (rgb.float() - mean_t) / std_t
    pad_h, pad_w = _padded(size[0], size_divisor) - size[0], _padded(size[1], size_divisor) - size[1]
    return SegInput(F.pad(pixels, (0, pad_w, 0, pad_h), value=0.0), size)


def labels_from_logits(logits: torch.Tensor, seg_input: SegInput, size: tuple[int, int]) -> np.ndarray:
    """(C, h', w') logits of ``seg_input`` -> (H, W) = ``size`` arg-max labels (see the module docstring)."""
    padded = seg_input.pixels.shape[1:]
    up = F.interpolate(logits[None].float(), size=padded, mode="bilinear", align_corners=False)
    h, w = seg_input.resized
    out = F.interpolate(up[:, :, :h, :w], size=tuple(size), mode="bilinear", align_corners=False)  # (1, C, H, W)
    return out[0].argmax(dim=0).cpu().numpy().astype(np.int64)


def segment(forward: Callable[[torch.Tensor], torch.Tensor], inputs: list[SegInput], sizes: Sequence[tuple[int, int]],
            device: torch.device) -> list[np.ndarray]:
    """Labels for each input at its scoring size; ``forward`` maps (B, 3, Hp, Wp) pixels to (B, C, h', w') logits.
    Inputs of one padded size go through ``forward`` together."""
    out: list[np.ndarray | None] = [None] * len(inputs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(inputs):
        groups.setdefault(tuple(item.pixels.shape), []).append(i)
    for indices in groups.values():
        logits = forward(torch.stack([inputs[i].pixels for i in indices]).to(device))
        for i, lg in zip(indices, logits):
            out[i] = labels_from_logits(lg, inputs[i], sizes[i])
    return out  # type: ignore[return-value]
