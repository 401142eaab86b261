"""Tiny, seeded, randomly initialised stand-ins for every scoring model (tests and the offline demo only).

They keep each real model's class, input pipeline and output shape contract, so the whole scoring path runs, but
their numbers mean nothing: a report made with them says so in its first line.
"""

from __future__ import annotations

import functools
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, SegformerConfig,
                          SegformerForSemanticSegmentation, SegformerImageProcessorPil, ViTConfig,
                          ViTImageProcessorPil, ViTModel)
from transformers.image_utils import PILImageResampling

RANDOM_INIT_WARNING = ("RANDOM-INIT MODE: tiny randomly initialised encoders were used; these numbers are NOT "
                       "comparable to any paper (tests / offline demo only).")
CLIP_VOCAB = 49408  # open_clip's bpe_simple_vocab_16e6 (the OpenAI CLIP BPE): 49406 = <start>, 49407 = <end>


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build weights from `seed` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_dino(seed: int) -> tuple[ViTModel, ViTImageProcessorPil]:
    """ViT-S/16-shaped input (224, patch 16) with a 2-layer, 32-wide trunk; dino-vits16's preprocessing."""
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=224, patch_size=16)
    with seeded(seed):
        model = ViTModel(config, add_pooling_layer=False).eval()
    processor = ViTImageProcessorPil(size={"height": 224, "width": 224}, resample=PILImageResampling.BILINEAR,
                                     image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return model, processor


def tiny_clip(seed: int) -> tuple[CLIPModel, CLIPImageProcessorPil]:
    """CLIP with the real BPE vocabulary size and 77-token context, 2-layer 32-wide towers, 16-d projection."""
    text = dict(vocab_size=CLIP_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=224, patch_size=32)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    with seeded(seed):
        model = CLIPModel(config).eval()
    return model, CLIPImageProcessorPil()  # OpenAI CLIP preprocessing: resize 224 bicubic, crop 224


@functools.lru_cache(maxsize=1)
def _open_clip_tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-L-14")


def open_clip_tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """The real CLIP BPE tokenizer shipped inside open_clip_torch -> {'input_ids': (N, 77)} (0-padded, no mask)."""
    return {"input_ids": _open_clip_tokenizer()(texts)}


def tiny_segmenter(seed: int, num_classes: int) -> tuple[SegformerForSemanticSegmentation, SegformerImageProcessorPil]:
    """A 4-stage SegFormer with 8..64 channels and `num_classes` outputs; inputs resized to 128 x 128."""
    config = SegformerConfig(num_labels=num_classes, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                             num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32)
    with seeded(seed):
        model = SegformerForSemanticSegmentation(config).eval()
    return model, SegformerImageProcessorPil(size={"height": 128, "width": 128})


def _inception_skeleton(device: str = "cpu"):
    """torch-fidelity's InceptionV3 class, built without reading a weights file (meta device: no init cost)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            if not state_dict:  # the constructor's own load: keep the skeleton as built
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    with tempfile.TemporaryDirectory() as tmp, torch.device(device):
        torch.save({}, Path(tmp) / "empty.pth")
        return _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(Path(tmp) / "empty.pth"))


@functools.lru_cache(maxsize=2)
def random_inception_state(seed: int) -> dict[str, torch.Tensor]:
    """A state dict in torch-fidelity's InceptionV3 layout, seeded, with BN statistics calibrated on noise.

    Calibration (one train-mode pass, cumulative BN averages) keeps activations O(1): random BN statistics either
    explode or underflow into denormals, which make CPU convolutions many times slower.
    """
    with seeded(seed):
        net = _inception_skeleton()
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        net.train()
        with torch.no_grad():
            net(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))  # (B, 3, H, W) -> resized to 299
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def random_inception(seed: int):
    """torch-fidelity's InceptionV3 holding `random_inception_state(seed)`, in eval mode."""
    net = _inception_skeleton("meta")
    net.load_state_dict(random_inception_state(seed), assign=True)
    return net.eval().requires_grad_(False)


def random_inception_weights(seed: int, folder: str | Path | None = None) -> Path:
    """`random_inception_state(seed)` saved as a .pth file that torch-fidelity's loader reads like the real one."""
    folder = Path(folder or tempfile.mkdtemp(prefix="eval_inception_"))
    path = folder / f"random_inception_seed{seed}.pth"
    torch.save(random_inception_state(seed), path)
    return path
