"""DINO and CLIP image / text embedders, loaded from the hub, a local folder, or random-init for tests.

Protocol (OFT's official `oft-db/eval.py`, reused by the ETHER paper):
  DINO  : `facebook/dino-vits16`, CLS token of `last_hidden_state`; that checkpoint's image processor (PIL backend:
          resize to 224 x 224 bilinear, mean = std = 0.5, no crop).
  CLIP  : `openai/clip-vit-large-patch14`, projected image / text embeddings (`get_image_features`,
          `get_text_features`); its processor (resize 224 bicubic, centre crop 224) and tokenizer.
Embeddings are returned raw (float32, CPU); cosine similarities are taken in `eval.pairwise`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import transformers
from PIL import Image

from eval.hub import hf_load
from eval.random_init import open_clip_tokenize, tiny_clip, tiny_dino

Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]


def _projected(out: Any) -> torch.Tensor:
    """transformers < 5 returns the projected embedding; 5.x returns an output whose `pooler_output` holds it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _plain(value: Any) -> Any:
    """JSON-ready copy of a processor attribute (SizeDict, enum, tuple)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return int(value) if hasattr(value, "value") else value


def processor_summary(processor: Any) -> dict[str, Any]:
    """The preprocessing numbers that decide the scores, for metrics.json."""
    keys = ("size", "crop_size", "do_center_crop", "resample", "image_mean", "image_std", "do_resize")
    summary = {k: _plain(getattr(processor, k, None)) for k in keys}
    return {"class": type(processor).__name__, **summary}


def pil_image_processor(spec: str, what: str, flag: str) -> Any:
    """The checkpoint's own image processor on the PIL backend (as OFT's ViTFeatureExtractor / CLIPProcessor)."""
    from transformers import AutoImageProcessor

    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    return hf_load(AutoImageProcessor, spec, what, flag, **pil)


@dataclass
class DinoEncoder:
    model: torch.nn.Module
    processor: Any
    device: torch.device
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)  # (B, 3, 224, 224)
        return self.model(pixel_values=pixels).last_hidden_state[:, 0].float().cpu()  # (B, D) CLS token


@dataclass
class ClipEncoder:
    model: torch.nn.Module
    processor: Any
    tokenize: Tokenize
    device: torch.device
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)  # (B, 3, 224, 224)
        return _projected(self.model.get_image_features(pixel_values=pixels)).float().cpu()  # (B, P)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}  # input_ids (B, L)
        return _projected(self.model.get_text_features(**tokens)).float().cpu()  # (B, P)


def load_dino(spec: str, device: torch.device, random_init: bool = False, seed: int = 0) -> DinoEncoder:
    if random_init:
        model, processor = tiny_dino(seed)
        name = "random-init tiny ViT (stand-in for DINO)"
    else:
        model = hf_load(transformers.ViTModel, spec, "DINO model", "--dino", add_pooling_layer=False)
        processor = pil_image_processor(spec, "DINO image processor", "--dino")
        name = spec
    info = {"model": name, "feature": "last_hidden_state[:, 0] (CLS)", "preprocessing": processor_summary(processor)}
    return DinoEncoder(model.to(device).eval(), processor, device, name, info)


def load_clip(spec: str, device: torch.device, random_init: bool = False, seed: int = 0) -> ClipEncoder:
    """HF CLIP (the protocol's), or an open_clip model when spec is 'open_clip:ARCH:PRETRAINED'."""
    if spec.startswith("open_clip:") and not random_init:
        from eval.open_clip_backend import load_open_clip

        return load_open_clip(spec, device)  # same embed_images / embed_texts contract
    if random_init:
        model, processor = tiny_clip(seed)
        tokenize: Tokenize = open_clip_tokenize
        name = "random-init tiny CLIP (stand-in for CLIP), open_clip BPE tokenizer"
    else:
        model = hf_load(transformers.CLIPModel, spec, "CLIP model", "--clip")
        processor = pil_image_processor(spec, "CLIP image processor", "--clip")
        tokenizer = hf_load(transformers.AutoTokenizer, spec, "CLIP tokenizer", "--clip")

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            return dict(tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt"))

        name = spec
    info = {"model": name, "feature": "projected embeddings (get_image_features / get_text_features)",
            "preprocessing": processor_summary(processor)}
    return ClipEncoder(model.to(device).eval(), processor, tokenize, device, name, info)
