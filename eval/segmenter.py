"""Semantic segmenters for S2I scoring: any SegFormer / UperNet checkpoint that transformers loads, or random-init.

ETHER's paper scores with UperNet-R101 (mmseg); OFT with SegFormer-B4 (`nvidia/segformer-b4-finetuned-ade-512-512`).
transformers has no UperNet-R101; `openmmlab/upernet-convnext-*` are the nearest UperNets it loads. Logits are
resized bilinearly (align_corners=False) to the scoring size and arg-maxed, as mmseg does before it scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from eval.encoders import pil_image_processor, processor_summary
from eval.errors import EvalInputError
from eval.hub import hf_load
from eval.random_init import tiny_segmenter


class Segmenter(Protocol):
    info: dict[str, Any]

    def predict(self, images: list[Image.Image], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Images -> (H, W) int64 train-id maps, one per image at the given (H, W)."""


def logits_to_labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) logits -> (H, W) arg-max after a bilinear resize to `size`."""
    up = F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)  # (1, C, H, W)
    return up[0].argmax(dim=0).cpu().numpy().astype(np.int64)


@dataclass
class HFSegmenter:
    model: torch.nn.Module
    processor: Any
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, images: list[Image.Image], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)  # (B, 3, h, w)
        logits = self.model(pixel_values=pixels).logits  # (B, C, h', w')
        return [logits_to_labels(lg, size) for lg, size in zip(logits, sizes, strict=True)]


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
            "preprocessing": processor_summary(processor),
            "postprocessing": "logits resized bilinearly (align_corners=False) to the scoring size, then arg-max"}
    return HFSegmenter(model.to(device).eval(), processor, device, info)
