"""DreamBooth metrics against a brute-force double loop over (real, generated) pairs, one image at a time."""

from __future__ import annotations

import shutil
from collections import defaultdict
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image

from eval.config import DreamBoothEvalConfig
from eval.dreambooth import evaluate_dreambooth
from eval.encoders import load_clip, load_dino
from eval.images import load_rgb, lpips_input
from eval.lpips_metric import load_lpips

from .conftest import DREAMBOOTH, write_manifest

CPU = torch.device("cpu")
LPIPS_SIZE = 64


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten(), v.double().flatten()
    return float(u @ v / (u.norm() * v.norm()))


def brute_force(gen_dir, real_dir, rows, seed):
    """{metric: {(method, subject, prompt_index): [pair values]}} by explicit loops; every image embedded alone."""
    dino, clip = load_dino("x", CPU, True, seed), load_clip("x", CPU, True, seed)
    lp = load_lpips(CPU, random_init=True, seed=seed)[0]
    embed = {}  # path -> (dino (1, D), clip (1, P), lpips input (1, 3, S, S)), each from a batch of one

    def of(path):
        if path not in embed:
            img = load_rgb(path)
            embed[path] = (dino.embed_images([img]), clip.embed_images([img]), lpips_input(img, LPIPS_SIZE)[None])
        return embed[path]

    pairs = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = (row["method"], row["subject"], row["prompt_index"])
        g_dino, g_clip, g_lp = of(gen_dir / row["path"])
        for real_path in sorted((real_dir / row["subject"]).iterdir()):
            r_dino, r_clip, r_lp = of(real_path)
            pairs["dino"][key].append(_cos(r_dino, g_dino))
            pairs["clip_i"][key].append(_cos(r_clip, g_clip))
            with torch.no_grad():
                pairs["lpips"][key].append(float(lp(r_lp, g_lp)))  # the lpips package's own forward
        pairs["clip_t"][key].append(_cos(g_clip, clip.embed_texts([row["prompt"]])))
    groups = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["subject"], row["prompt_index"])].append(row)
    for key, members in groups.items():
        for r1, r2 in combinations(members, 2):
            x1, x2 = (of(gen_dir / r["path"])[2] for r in (r1, r2))
            with torch.no_grad():
                pairs["lpips_diversity"][key].append(float(lp(x1, x2)))
    return pairs


def _mean(pairs, select):
    values = [v for key, vals in pairs.items() if select(key) for v in vals]
    return float(np.mean(values))


def test_means_per_subject_and_per_prompt_equal_brute_force(synthetic_dreambooth, tmp_path):
    gen, real, rows = synthetic_dreambooth({"a": 2, "b": 5}, prompts=2, per_prompt=2, methods=("m1", "m2"))
    cfg = DreamBoothEvalConfig(generated=str(gen), real=str(real), out=str(tmp_path / "o"), random_init=True,
                               seed=7, batch_size=3, lpips_size=LPIPS_SIZE, device="cpu")  # brute force runs on CPU
    payload = evaluate_dreambooth(cfg)
    ref = brute_force(gen, real, rows, seed=7)
    for method in ("m1", "m2"):
        result = payload["results"][method]
        for metric, pairs in ref.items():
            assert result["means"][metric] == pytest.approx(_mean(pairs, lambda k: k[0] == method), rel=1e-5)
            assert result["pairs"][metric] == sum(len(v) for k, v in pairs.items() if k[0] == method)
            for subject in ("a", "b"):
                want = _mean(pairs, lambda k: k[0] == method and k[1] == subject)
                assert result["per_subject"][subject][metric] == pytest.approx(want, rel=1e-5)
            for p in (0, 1):
                want = _mean(pairs, lambda k: k[0] == method and k[2] == p)
                assert result["per_prompt"][f"{p:02d}"][metric] == pytest.approx(want, rel=1e-5)
    # unequal real counts: the flat mean weighs subject b (5 reals) more than the mean of subject means would
    per_subject = payload["results"]["m1"]["per_subject"]
    flat = payload["results"]["m1"]["means"]["dino"]
    assert flat == pytest.approx((2 * per_subject["a"]["dino"] + 5 * per_subject["b"]["dino"]) / 7, rel=1e-9)
    assert payload["results"]["m1"]["pairs"]["dino"] == 4 * 2 + 4 * 5


def test_real_self_pairs_equal_brute_force(synthetic_dreambooth, tmp_path):
    gen, real, _ = synthetic_dreambooth({"a": 3, "b": 4}, prompts=1, per_prompt=1)
    cfg = DreamBoothEvalConfig(generated=str(gen), real=str(real), out=str(tmp_path / "o"), random_init=True,
                               metrics=("dino",), device="cpu")
    payload = evaluate_dreambooth(cfg)
    dino = load_dino("x", CPU, True, 0)
    values = {s: [_cos(dino.embed_images([load_rgb(p)]), dino.embed_images([load_rgb(q)]))
                  for p in sorted((real / s).iterdir()) for q in sorted((real / s).iterdir()) if p != q]
              for s in ("a", "b")}
    row = payload["real_images"]
    assert row["pairs"]["dino"] == 3 * 2 + 4 * 3
    assert row["means"]["dino"] == pytest.approx(np.mean(values["a"] + values["b"]), rel=1e-5)
    assert row["per_subject"]["a"]["dino"] == pytest.approx(np.mean(values["a"]), rel=1e-5)


def test_identical_images_score_one_and_zero_lpips(tmp_path):
    real = tmp_path / "real" / "dog"
    real.mkdir(parents=True)
    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy(DREAMBOOTH / "dog" / "02.jpg", real / "00.jpg")
    shutil.copy(DREAMBOOTH / "dog" / "02.jpg", gen / "same.jpg")
    Image.new("RGB", (64, 64)).save(gen / "black.png")  # a safety-checker output: left out, as OFT does
    write_manifest(gen, [{"path": "same.jpg", "prompt": "a dog", "seed": 0, "method": "m", "subject": "dog"},
                         {"path": "black.png", "prompt": "a dog", "seed": 1, "method": "m", "subject": "dog"}])
    cfg = DreamBoothEvalConfig(generated=str(gen), real=str(tmp_path / "real"), out=str(tmp_path / "o"),
                               random_init=True, lpips_size=LPIPS_SIZE, metrics=("dino", "clip_i", "lpips"))
    payload = evaluate_dreambooth(cfg)
    assert payload["n_images"] == 1 and payload["skipped_black_images"] == [str((gen / "black.png").resolve())]
    means = payload["results"]["m"]["means"]
    assert means["dino"] == pytest.approx(1.0, abs=1e-6)
    assert means["clip_i"] == pytest.approx(1.0, abs=1e-6)
    assert means["lpips"] == 0.0
