"""Fixtures for the eval tests: offline hub, the shipped assets, and small generated folders with manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DREAMBOOTH = Path(__file__).resolve().parents[2] / "ether_diffusion" / "assets" / "dreambooth"  # package data
ADE20K = ASSETS / "ade20k"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach a hub: offline flags on, read at call time by eval.hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def random_image(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A smooth random RGB image (blocks upsampled), so resizing keeps it recognisably itself."""
    blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.BILINEAR)


def write_manifest(folder: Path, rows: list[dict]) -> Path:
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def synthetic_dreambooth(tmp_path) -> Callable[..., tuple[Path, Path, list[dict]]]:
    """make(real_counts={'a': 2, 'b': 3}, prompts=2, per_prompt=2, methods=('m',)) -> (generated, real, rows)."""

    def make(real_counts: dict[str, int], prompts: int = 2, per_prompt: int = 2, methods=("m",), seed: int = 0):
        rng = np.random.default_rng(seed)
        real, gen = tmp_path / "real", tmp_path / "gen"
        rows = []
        for subject, count in real_counts.items():
            (real / subject).mkdir(parents=True)
            for k in range(count):
                random_image(rng).save(real / subject / f"{k:02d}.jpg", quality=95)
            for method in methods:
                for p in range(prompts):
                    for s in range(per_prompt):
                        name = f"{method}/{subject}_{p}_{s}.png"
                        (gen / method).mkdir(parents=True, exist_ok=True)
                        random_image(rng).save(gen / name)
                        rows.append({"path": name, "prompt": f"a {subject} number {p}", "seed": s,
                                     "method": method, "subject": subject, "prompt_index": p})
        write_manifest(gen, rows)
        return gen, real, rows

    return make


def encode_labels(annotation: np.ndarray) -> Image.Image:
    """An RGB "generated image" that carries the annotation exactly: red channel = class id."""
    rgb = np.zeros((*annotation.shape, 3), dtype=np.uint8)
    rgb[..., 0] = annotation
    return Image.fromarray(rgb)


class GroundTruthSegmenter:
    """A perfect segmenter stub: decodes `encode_labels` images back to train ids (id - 1, 0 -> 255)."""

    info = {"model": "ground-truth stub (tests)"}

    def predict(self, images, sizes):
        out = []
        for img, size in zip(images, sizes):
            ids = np.array(img)[..., 0].astype(np.int64)
            assert ids.shape == tuple(size)
            out.append(np.where(ids == 0, 255, ids - 1))
        return out


@pytest.fixture
def ade_generated(tmp_path) -> Callable[..., Path]:
    """make(kind) -> folder with manifest: 'encoded' annotation images, or 'copies' of the real val images."""

    def make(kind: str, method: str = "m") -> Path:
        gen = tmp_path / f"ade_{kind}"
        gen.mkdir()
        rows = []
        for ann in sorted((ADE20K / "annotations" / "validation").glob("*.png")):
            name = ann.stem + ".png"
            if kind == "encoded":
                encode_labels(np.array(Image.open(ann))).save(gen / name)
            else:
                Image.open(ADE20K / "images" / "validation" / f"{ann.stem}.jpg").convert("RGB").save(gen / name)
            rows.append({"path": name, "prompt": "p", "seed": 0, "method": method, "condition": ann.name})
        write_manifest(gen, rows)
        return gen

    return make
