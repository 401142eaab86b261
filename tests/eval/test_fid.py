"""FID: our Fréchet distance against torchmetrics and torch-fidelity, and our Inception features bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torchmetrics.image.fid import NoTrainInceptionV3, _compute_fid

from eval.fid import (feature_statistics, fid_from_features, frechet_distance, frechet_distance_samples,
                      inception_features, load_inception)
from eval.random_init import random_inception_weights

from .conftest import ADE20K


def _features(n1, n2, d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n1, d)) * 2.0 + 0.5
    b = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) * 0.4 - 0.3
    return a, b


def _references(a, b):
    s1, s2 = feature_statistics(a), feature_statistics(b)
    tm = _compute_fid(*(torch.from_numpy(x) for x in (s1[0], s1[1], s2[0], s2[1]))).item()
    tf = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(a)),
                                  fid_features_to_statistics(torch.from_numpy(b)), False)
    return tm, tf["frechet_inception_distance"]


@pytest.mark.parametrize("n1,n2,d", [(300, 200, 24), (120, 90, 64)], ids=["N>D", "N>D-64"])
def test_frechet_distance_equals_references_when_n_exceeds_d(n1, n2, d):
    a, b = _features(n1, n2, d, seed=d)
    tm, tf = _references(a, b)
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert ours == pytest.approx(tm, rel=1e-9) and ours == pytest.approx(tf, rel=1e-9)
    assert fid_from_features(a, b) == pytest.approx(ours, rel=1e-9)


@pytest.mark.parametrize("n1,n2,d", [(20, 30, 64), (6, 9, 48)], ids=["N<D", "N<<D"])
def test_frechet_distance_equals_references_when_d_exceeds_n(n1, n2, d):
    a, b = _features(n1, n2, d, seed=n1)
    tm, tf = _references(a, b)
    ours = fid_from_features(a, b)
    # the references take square roots of rounding-level eigenvalues of a singular S1 S2: ~1e-5 absolute noise
    assert ours == pytest.approx(tm, rel=1e-6, abs=1e-3) and ours == pytest.approx(tf, rel=1e-6, abs=1e-3)
    assert frechet_distance_samples(a, b) == pytest.approx(
        frechet_distance(*feature_statistics(a), *feature_statistics(b)), rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_shift_adds_its_square():
    a, _ = _features(10, 10, 32, seed=3)  # N < D: singular covariance
    assert abs(fid_from_features(a, a)) < 1e-9
    shift = np.full(32, 0.5)
    assert fid_from_features(a + shift, a) == pytest.approx(32 * 0.25, rel=1e-9)


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    path = random_inception_weights(seed=1, folder=tmp_path_factory.mktemp("inception"))
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return path, reference


def test_inception_features_equal_torch_fidelity_bit_for_bit(random_inception):
    path, reference = random_inception
    ours, info = load_inception(torch.device("cpu"), weights=str(path))
    assert info["weights"] == str(path)
    paths = sorted((ADE20K / "images" / "validation").glob("*.jpg"))[1:3]  # mixed sizes: 500x364, 400x300
    feats = inception_features(ours, paths, torch.device("cpu"), batch_size=2)
    for i, p in enumerate(paths):
        x = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        want = reference(x)[0].double().numpy()[0]
        assert np.array_equal(feats[i], want)
    assert feats.shape == (2, 2048) and feats.std(axis=0).mean() > 0


def test_torchmetrics_needs_antialias_false_to_match(random_inception):
    path, reference = random_inception
    x = torch.from_numpy(np.array(Image.open(ADE20K / "images" / "validation" / "ADE_val_00000003.jpg")))
    x = x.permute(2, 0, 1)[None].contiguous()
    want = reference(x)[0]
    compat = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(path), antialias=False)
    default = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(path), antialias=True)
    assert torch.equal(compat(x), want)
    assert not torch.allclose(default(x), want)
