"""End to end on the shipped real data: the CLI scores folders and writes metrics.json, report.md and grid.png."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from eval.cli import main
from eval.config import S2IEvalConfig
from eval.s2i import evaluate_s2i

from .conftest import ADE20K, DREAMBOOTH, GroundTruthSegmenter, write_manifest


def _dog_as_generated(tmp_path):
    """All 5 real dog images, copied as the 'generated' images of method 'copy' (prompt index = image index % 2)."""
    gen = tmp_path / "gen"
    gen.mkdir()
    rows = []
    for k, src in enumerate(sorted((DREAMBOOTH / "dog").glob("*.jpg"))):
        shutil.copy(src, gen / f"{k}.jpg")
        prompt = ["a qwe dog in the jungle", "a qwe dog in the snow"][k % 2]
        rows.append({"path": f"{k}.jpg", "prompt": prompt, "seed": k, "method": "copy", "subject": "dog",
                     "prompt_index": k % 2})
    write_manifest(gen, rows)
    return gen


def test_dreambooth_cli_on_real_images(tmp_path, capsys):
    gen, out = _dog_as_generated(tmp_path), tmp_path / "out"
    code = main(["dreambooth", "--generated", str(gen), "--real", str(DREAMBOOTH), "--random-init",
                 "--lpips-size", "128", "--batch-size", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].startswith("> **RANDOM-INIT MODE") and "NOT comparable to any paper" in report
    assert metrics["comparable_to_papers"] is False and metrics["protocol"]["name"] == "dreambooth"
    assert metrics["models"]["dino"]["preprocessing"]["image_mean"] == [0.5, 0.5, 0.5]
    means, real = metrics["results"]["copy"]["means"], metrics["real_images"]["means"]
    # generated = the 5 real images: 25 pairs = 5 identical (cos 1, LPIPS 0) + the 20 real self-pairs
    for metric in ("dino", "clip_i"):
        assert means[metric] == pytest.approx((5 * 1.0 + 20 * real[metric]) / 25, abs=1e-6)
    assert means["lpips"] == pytest.approx(20 * real["lpips"] / 25, rel=1e-5)
    assert metrics["results"]["copy"]["pairs"]["lpips_diversity"] == 3 + 1  # C(3,2) + C(2,2) pairs
    assert set(metrics["results"]["copy"]["per_prompt"]) == {"00", "01"}
    assert "| copy | 5 |" in report and "| real images |" in report and "## Per subject: copy" in report
    grid = Image.open(out / "grid.png")
    assert grid.width > 5 * 128 and grid.height >= 128


def test_s2i_ground_truth_segmenter_scores_one(ade_generated, tmp_path):
    cfg = S2IEvalConfig(generated=str(ade_generated("encoded")), ade_root=str(ADE20K), out=str(tmp_path / "o"),
                        fid=False, batch_size=3)
    result = evaluate_s2i(cfg, segmenter=GroundTruthSegmenter())["results"]["m"]
    assert result["mIoU"] == result["aAcc"] == result["mAcc"] == 1.0
    present = {c for c, v in result["per_class_iou"].items() if v is not None}
    assert {"wall", "sky", "airplane", "runway", "bus"} <= present and len(present) == 19  # union, per README
    assert result["n_images"] == 4


def test_s2i_cli_random_init_with_fid(ade_generated, tmp_path, capsys):
    gen, out = ade_generated("copies"), tmp_path / "out"
    code = main(["s2i", "--generated", str(gen), "--ade-root", str(ADE20K / "annotations" / "validation"),
                 "--random-init", "--batch-size", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    result = metrics["results"]["m"]
    assert 0 <= result["mIoU"] <= 1 and 0 <= result["aAcc"] <= 1
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)  # generated = the val images themselves (PNG copies)
    assert result["fid_n"] == {"generated": 4, "reference": 4}
    assert metrics["real_images"] is None  # --score-real: see test_local_weights.py
    assert "random-init tiny SegFormer" in metrics["models"]["segmenter"]["model"]
    report = (out / "report.md").read_text()
    assert report.startswith("> **RANDOM-INIT MODE") and "segmenter" in report and "| m | 4 |" in report
    assert (out / "grid.png").is_file()


def test_fid_cli_between_folders(tmp_path, capsys):
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir(), gen.mkdir()
    for src in sorted((ADE20K / "images" / "validation").glob("*.jpg"))[2:4]:  # the two smallest-cost images
        (ref / src.name).write_bytes(src.read_bytes())
        Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(gen / (src.stem + ".png"))
    code = main(["fid", "--generated", str(gen), "--reference", str(ref), "--random-init", "--out",
                 str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())["results"]["generated"]
    assert result["fid"] > 0 and result["fid_n"] == {"generated": 2, "reference": 2}


def test_s2i_scored_at_the_generated_size(ade_generated, tmp_path):
    gen = ade_generated("encoded")
    for png in gen.glob("*.png"):  # the generator's 256 x 256 output, labels carried by nearest resizing
        Image.open(png).resize((256, 256), Image.NEAREST).save(png)
    cfg = S2IEvalConfig(generated=str(gen), ade_root=str(ADE20K), out=str(tmp_path / "o"), fid=False,
                        score_at="generated")
    result = evaluate_s2i(cfg, segmenter=GroundTruthSegmenter())["results"]["m"]
    assert result["mIoU"] == result["aAcc"] == 1.0
    cfg_ann = S2IEvalConfig(generated=str(gen), ade_root=str(ADE20K), out=str(tmp_path / "p"), fid=False)
    with pytest.raises(AssertionError):  # at the annotation's size the stub is asked for 683 x 512 maps
        evaluate_s2i(cfg_ann, segmenter=GroundTruthSegmenter())
