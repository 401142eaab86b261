"""LPIPS from cached features against the `lpips` package and torchmetrics on the same random backbone."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchmetrics.functional.image.lpips import _LPIPS
from torchvision import transforms

from eval.images import lpips_input
from eval.lpips_metric import _load_alexnet_trunk, load_lpips, lpips_cross, lpips_features

from .conftest import DREAMBOOTH, random_image

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    return load_lpips(CPU, random_init=True, seed=3)[0]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return torch.stack([lpips_input(random_image(rng, 80), 64) for _ in range(5)])  # (5, 3, 64, 64) in [-1, 1]


def test_cross_equals_lpips_package_pair_by_pair(model, images):
    a, b = images[:2], images[2:]
    ours = lpips_cross(model, lpips_features(model, a), lpips_features(model, b))  # (2, 3)
    with torch.no_grad():
        ref = torch.stack([model(a[i : i + 1].expand(3, -1, -1, -1), b).reshape(-1) for i in range(2)])
    assert ours.shape == (2, 3)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)
    assert (ours > 0).all()


def test_cross_equals_torchmetrics_lpips_with_the_same_weights(model, images):
    with contextlib.redirect_stdout(io.StringIO()):
        tm = _LPIPS(pretrained=False, net="alex", pnet_rand=True).eval()
    missing, unexpected = tm.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing if not k.startswith("lins.")]  # lins.* alias lin0..lin4
    assert set(unexpected) <= {"scaling_layer.shift", "scaling_layer.scale"}  # constants there, not buffers
    assert torch.equal(tm.scaling_layer.shift, model.scaling_layer.shift)
    assert torch.equal(tm.scaling_layer.scale, model.scaling_layer.scale)
    ours = lpips_cross(model, lpips_features(model, images[:1]), lpips_features(model, images[1:]))[0]
    with torch.no_grad():
        ref = tm(images[:1].expand(4, -1, -1, -1), images[1:]).reshape(-1)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_lpips_of_an_image_with_itself_is_exactly_zero(model, images):
    feats = lpips_features(model, images)
    d = lpips_cross(model, feats, feats)
    assert torch.equal(torch.diagonal(d), torch.zeros(5))
    assert torch.allclose(d, d.T)  # symmetric
    assert (d + torch.eye(5) > 0).all()


def test_lpips_input_matches_ofts_torchvision_transform():
    img = Image.open(DREAMBOOTH / "dog" / "00.jpg").convert("RGB")
    oft = transforms.Compose([transforms.Resize((96, 96)), transforms.ToTensor(),
                              transforms.Normalize([0.5] * 3, [0.5] * 3)])
    assert torch.allclose(lpips_input(img, 96), oft(img), atol=1e-6)


def test_alexnet_weights_are_copied_into_the_lpips_trunk(model):
    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    fresh = load_lpips(CPU, random_init=True, seed=4)[0]
    _load_alexnet_trunk(fresh, alex.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = [alex.features[: i + 1](x) for i in (1, 4, 7, 9, 11)]  # relu1..relu5
        got = fresh.net(x)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6)
