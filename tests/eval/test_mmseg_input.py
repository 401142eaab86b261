"""The segmenter's input and output as mmseg's ADE20K test pipeline has them, against hand-computed sizes and a
numpy bilinear resize written here (half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eval.mmseg_input import SegInput, labels_from_logits, prepare, rescaled_size
from eval.segmenter import load_segmenter

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # SegFormer's (mmseg: 123.675 / 58.395, ...)


@pytest.mark.parametrize("hw,expected", [
    ((512, 683), (512, 683)),     # a typical ADE20K val image: short side already 512
    ((256, 256), (512, 512)),     # upscaled until the short side is 512
    ((300, 2000), (307, 2048)),   # the long side limits: 2048 / 2000 = 1.024; 300 * 1.024 = 307.2
    ((1024, 768), (683, 512)),    # 768 -> 512: factor 2/3; 1024 * 2/3 = 682.67 -> 683 (half up)
])
def test_rescaled_size_fits_2048_by_512_keeping_the_ratio(hw, expected):
    assert rescaled_size(*hw) == expected


def _bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (out_h, out_w, 3) float64: source = (dst + 0.5) * in / out - 0.5, clamped to the edges."""
    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = axis(out_h, img.shape[0])
    x0, x1, fx = axis(out_w, img.shape[1])
    a = img.astype(np.float64)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bottom = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("width,height", [(300, 170), (2100, 600)])  # one upscaled, one downscaled
def test_prepare_rescales_normalises_and_pads(width, height):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    item = prepare(Image.fromarray(img), MEAN, STD)
    h, w = rescaled_size(height, width)
    assert item.resized == (h, w)
    assert item.pixels.shape == (3, -(-h // 32) * 32, -(-w // 32) * 32)
    assert (item.pixels[:, h:, :] == 0).all() and (item.pixels[:, :, w:] == 0).all()
    back = item.pixels[:, :h, :w].permute(1, 2, 0).numpy() * np.array(STD) * 255 + np.array(MEAN) * 255
    want = _bilinear_reference(img, h, w)
    diff = np.abs(back - want)
    assert diff.max() <= 0.51 + 1e-3 and diff.mean() < 0.3  # the image is rounded to uint8, as OpenCV returns it


def test_logits_go_to_the_padded_input_then_lose_the_padding():
    """Logits whose padding area says class 1 and image area class 0: no label may come from the padding."""
    item = SegInput(torch.zeros(3, 64, 64), resized=(40, 64))  # 24 rows of padding at the bottom
    logits = torch.zeros(2, 16, 16)
    logits[0, :10] = 5.0   # the top 10 of 16 rows cover the image (40 / 64 of the input)
    logits[1, 10:] = 5.0
    labels = labels_from_logits(logits, item, (30, 48))
    assert labels.shape == (30, 48) and (labels == 0).all()
    uncropped = torch.nn.functional.interpolate(logits[None], size=(30, 48), mode="bilinear", align_corners=False)
    assert (uncropped[0].argmax(0) == 1).any()  # resizing without the crop would have


def test_segmenter_keeps_the_aspect_ratio_and_batches_like_single_images():
    seg = load_segmenter("unused", torch.device("cpu"), num_classes=150, random_init=True)
    seen = []
    seg.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(tuple(kwargs["pixel_values"].shape)),
                                        with_kwargs=True)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, size=s, dtype=np.uint8)) for s in
              [(512, 683, 3), (256, 256, 3), (384, 512, 3)]]
    sizes = [(512, 683), (96, 128), (256, 341)]
    batched = seg.predict(images, sizes)
    assert sorted(seen) == [(1, 3, 512, 512), (2, 3, 512, 704)]  # 384 x 512 -> 512 x 683 too: one pass per shape
    single = [seg.predict([im], [sz])[0] for im, sz in zip(images, sizes)]
    assert all(b.shape == sz and np.array_equal(b, s) for b, s, sz in zip(batched, single, sizes))
