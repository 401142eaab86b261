"""DINO and CLIP embeddings of non-square images against a direct transformers call on the same tiny random models,
with the protocol's preprocessing written out here in PIL + numpy: DINO squashes to 224 x 224 and takes the CLS
token; CLIP resizes the short side to 224 (bicubic) and centre-crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eval.encoders import load_clip, load_dino

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth content that differs between the middle and the sides, so a crop and a squash see different things."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)).resize((width, height),
                                                                                         Image.BILINEAR)


def _normalised(image: Image.Image, mean, std) -> torch.Tensor:
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None]  # (1, 3, H, W)


def _clip_pixels(image: Image.Image, crop: bool = True) -> torch.Tensor:
    if not crop:
        return _normalised(image.resize((224, 224), Image.BICUBIC), CLIP_MEAN, CLIP_STD)
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(224 * long / short)
    size = (224, new_long) if w < h else (new_long, 224)
    resized = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    return _normalised(resized.crop((left, top, left + 224, top + 224)), CLIP_MEAN, CLIP_STD)


IMAGES = [(_image(320, 180, 0), "landscape"), (_image(150, 260, 1), "portrait")]


@pytest.mark.parametrize("image,_", IMAGES)
def test_dino_is_the_cls_token_of_the_squashed_image(image, _):
    encoder = load_dino("unused", torch.device("cpu"), random_init=True)
    got = encoder.embed_images([image])
    pixels = _normalised(image.resize((224, 224), Image.BILINEAR), [0.5] * 3, [0.5] * 3)
    with torch.no_grad():
        tokens = encoder.model(pixel_values=pixels).last_hidden_state  # (1, 1 + 196, D)
    torch.testing.assert_close(got, tokens[:, 0], atol=1e-5, rtol=1e-4)
    assert (got - tokens[:, 1:].mean(dim=1)).abs().max() > 1e-2  # the mean of patch tokens is another vector


@pytest.mark.parametrize("image,_", IMAGES)
def test_clip_embeds_the_centre_crop(image, _):
    encoder = load_clip("unused", torch.device("cpu"), random_init=True)
    got = encoder.embed_images([image])
    with torch.no_grad():
        want = encoder.model.get_image_features(pixel_values=_clip_pixels(image))
        squashed = encoder.model.get_image_features(pixel_values=_clip_pixels(image, crop=False))
    want, squashed = (v if isinstance(v, torch.Tensor) else v.pooler_output for v in (want, squashed))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - squashed).abs().max() > 1e-3  # without the crop the embedding differs
