"""Semantic segmenters for S2I scoring: any SegFormer / UperNet checkpoint that transformers loads, or random-init.

ETHER's paper scores with UperNet-R101 (mmseg); OFT with SegFormer-B4 (`nvidia/segformer-b4-finetuned-ade-512-512`).
transformers has no UperNet-R101; `openmmlab/upernet-convnext-*` are the nearest UperNets it loads. Input and output
follow mmseg's ADE20K test pipeline (`eval.mmseg_input`): keep-ratio rescale to fit (2048, 512), normalise with the
checkpoint's mean / std, zero padding to a multiple of 32; logits resized to the padded input, padding cropped,
resized to the scoring size, arg-max. The checkpoint's image processor only supplies the mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import transformers
from PIL import Image

from eval.encoders import pil_image_processor
from eval.errors import EvalInputError
from eval.hub import hf_load
from eval.mmseg_input import SIZE_DIVISOR, TEST_SCALE, prepare, segment
from eval.random_init import tiny_segmenter


class Segmenter(Protocol):
    info: dict[str, Any]

    def predict(self, images: list[Image.Image], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Images -> (H, W) int64 train-id maps, one per image at the given (H, W)."""


@dataclass
class HFSegmenter:
    model: torch.nn.Module
    processor: Any
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)

    scale: tuple[int, int] = TEST_SCALE
    size_divisor: int = SIZE_DIVISOR

    @torch.no_grad()
    def predict(self, images: list[Image.Image], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        if len(images) != len(sizes):
            raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
        mean, std = self.processor.image_mean, self.processor.image_std
        inputs = [prepare(im, mean, std, self.scale, self.size_divisor) for im in images]
        return segment(lambda pixels: self.model(pixel_values=pixels).logits, inputs, sizes, self.device)


def load_segmenter(spec: str, device: torch.device, num_classes: int, random_init: bool = False,
                   seed: int = 0) -> HFSegmenter:
    if random_init:
        model, processor = tiny_segmenter(seed, num_classes)
        name = "random-init tiny SegFormer (stand-in for the segmenter)"
    else:
        model = hf_load(transformers.AutoModelForSemanticSegmentation, spec, "segmenter", "--segmenter")
        processor = pil_image_processor(spec, "segmenter image processor", "--segmenter")
        name = spec
    if model.config.num_labels != num_classes:
        raise EvalInputError(f"segmenter '{name}' predicts {model.config.num_labels} classes, not the "
                             f"{num_classes} ADE20K classes; pass an ADE20K-finetuned --segmenter")
    info = {"model": name, "architecture": type(model).__name__, "num_labels": model.config.num_labels,
            "preprocessing": {"pipeline": f"mmseg test: keep-ratio rescale to fit {TEST_SCALE} (bilinear, no "
                                          f"antialias, uint8), normalise, zero-pad to a multiple of {SIZE_DIVISOR}",
                              "image_mean": [float(v) for v in processor.image_mean],
                              "image_std": [float(v) for v in processor.image_std]},
            "postprocessing": "logits resized bilinearly (align_corners=False) to the padded input, padding cropped, "
                              "resized bilinearly to the scoring size, then arg-max"}
    return HFSegmenter(model.to(device).eval(), processor, device, info)
