"""ADE20K data: the palette against classes.json, condition maps, captions, the dataset, and each bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ether_diffusion.data.ade20k import (CLASSES_FILE, ADE20KDataError, ADE20KDataset, SkippedSampleWarning,
                                         colors_to_ids, ids_to_colors, load_condition, palette, read_annotation,
                                         read_captions, scan_ade20k, scan_annotations)

from .conftest import ADE20K, CAPTIONS, CLASSES_JSON

NAMES = [f"ADE_val_0000000{i}" for i in range(1, 5)]


# ------------------------------------------------------------------ palette
def test_packaged_classes_are_the_shared_file():
    assert CLASSES_FILE.read_bytes() == CLASSES_JSON.read_bytes()


def test_id_color_round_trip_against_classes_json():
    classes = json.loads(CLASSES_JSON.read_text())
    ids = np.array([[0] + [c["id"] for c in classes]])  # (1, 151)
    colors = ids_to_colors(ids)
    assert colors.dtype == np.uint8 and colors.shape == (1, 151, 3)
    assert colors[0, 0].tolist() == [0, 0, 0]  # unlabeled
    for c in classes:
        assert colors[0, c["id"]].tolist() == c["color"], c["name"]
    back = colors_to_ids(colors)[0]
    # every id comes back but skyscraper (49), whose colour the palette shares with road (7)
    expected = ids[0].copy()
    expected[expected == 49] = 7
    np.testing.assert_array_equal(back, expected)
    shared = [c["id"] for c in classes if c["color"] == classes[48]["color"]]
    assert shared == [7, 49]
    np.testing.assert_array_equal(ids_to_colors(back[None]), colors)  # colours round-trip exactly


def test_real_annotation_round_trip():
    for name in NAMES:
        ids = read_annotation(ADE20K / "annotations" / "validation" / f"{name}.png")
        assert 49 not in ids  # so the conversion is exact on these maps
        np.testing.assert_array_equal(colors_to_ids(ids_to_colors(ids)), ids)


def test_unknown_colour_and_bad_ids():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 1] = (1, 2, 3)
    with pytest.raises(ADE20KDataError, match=r"1 pixel\(s\).*\[1, 2, 3\]"):
        colors_to_ids(rgb)
    with pytest.raises(ADE20KDataError, match="0..150"):
        ids_to_colors(np.array([[151]]))
    assert palette().shape == (151, 3) and not palette().flags.writeable


# ------------------------------------------------------------------ captions
def test_caption_formats(tmp_path):
    assert read_captions(CAPTIONS)["ADE_val_00000002"] == "an old building with a clock tower"
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"ADE_val_00000001.jpg": "a house", "images/x/ADE_val_00000003.jpg": "a street"}))
    assert read_captions(as_json) == {"ADE_val_00000001": "a house", "ADE_val_00000003": "a street"}
    # OFT's released format: entry i is the split's image i + 1
    oft = tmp_path / "prompt_val_blip_full.json"
    oft.write_text("".join(json.dumps({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": p}) + "\n"
                           for i, p in enumerate(["p0", "p1", "p2", "p3"])))
    samples = scan_ade20k(ADE20K, "validation", captions=oft)
    assert [(s.name, s.prompt) for s in samples] == list(zip(NAMES, ["p0", "p1", "p2", "p3"]))


def test_scan_with_captions_or_one_prompt():
    samples = scan_ade20k(ADE20K, "validation", captions=CAPTIONS)
    assert [s.name for s in samples] == NAMES
    assert samples[3].prompt == "a small plane on a runway"
    assert {s.prompt for s in scan_ade20k(ADE20K, "validation", prompt="a photo")} == {"a photo"}
    rows = scan_annotations(ADE20K / "annotations" / "validation", CAPTIONS, limit=2)
    assert [(n, p) for n, _, p in rows] == [("ADE_val_00000001", "a house"),
                                            ("ADE_val_00000002", "an old building with a clock tower")]


# ------------------------------------------------------------------ dataset
def test_dataset_items_and_geometry():
    samples = scan_ade20k(ADE20K, "validation", captions=CAPTIONS)
    item = ADE20KDataset(samples, resolution=64)[3]
    assert item["pixels"].shape == item["condition"].shape == (3, 64, 64)
    assert -1 <= item["pixels"].min() and item["pixels"].max() <= 1
    assert item["prompt"] == "a small plane on a runway" and item["name"] == "ADE_val_00000004"
    # the condition is the nearest-resized map, coloured: every pixel is a palette colour
    ids = colors_to_ids((item["condition"] * 255).round().byte().permute(1, 2, 0).numpy())
    ann = Image.open(samples[3].annotation).resize((64, 64), Image.NEAREST)
    np.testing.assert_array_equal(ids, np.asarray(ann))
    torch.testing.assert_close(load_condition(samples[3].annotation, 64), item["condition"])


def test_augmentation_is_shared_and_seeded(tmp_path):
    # a photo that *is* its colour map (large class blocks), so a shared crop / flip keeps them aligned
    ids = np.kron(np.arange(1, 21, dtype=np.uint8).reshape(4, 5), np.ones((24, 24), np.uint8))  # (96, 120)
    for kind, im in (("images", Image.fromarray(ids_to_colors(ids))), ("annotations", Image.fromarray(ids))):
        (tmp_path / kind / "training").mkdir(parents=True)
        im.save(tmp_path / kind / "training" / "ADE_train_00000001.png")
    ds = ADE20KDataset(scan_ade20k(tmp_path, "training", prompt=""), resolution=32, crop="random", random_flip=True,
                       seed=3)
    torch.testing.assert_close(ds[0]["condition"], ds[0]["condition"])  # a pure function of (seed, epoch, i)
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        photo = (item["pixels"] + 1) / 2  # (3, 32, 32) in [0, 1]
        assert (photo - item["condition"]).abs().mean() < 0.03, epoch  # same crop and flip for both
        assert (photo - item["condition"].flip(-1)).abs().mean() > 0.1  # (a different flip would not match)
        seen.add(item["condition"].numpy().tobytes())
    assert len(seen) > 2  # crops / flips change with the epoch


# ------------------------------------------------------------------ bad input
def test_missing_split(ade_copy):
    with pytest.raises(ADE20KDataError, match=r"no images/training \(splits there: \['validation'\]\)"):
        scan_ade20k(ade_copy, "training", prompt="")
    with pytest.raises(ADE20KDataError, match="does not exist"):
        scan_ade20k(ade_copy / "nope", "validation", prompt="")


def test_size_mismatch_is_skipped_with_its_name(ade_copy):
    path = ade_copy / "annotations" / "validation" / "ADE_val_00000002.png"
    Image.open(path).resize((50, 40), Image.NEAREST).save(path)
    with pytest.warns(SkippedSampleWarning, match=r"ADE_val_00000002 \(image 500x364 but annotation 50x40\)"):
        samples = scan_ade20k(ade_copy, "validation", prompt="")
    assert [s.name for s in samples] == [NAMES[0], NAMES[2], NAMES[3]]


def test_ids_above_150_raise_with_the_file(ade_copy):
    path = ade_copy / "annotations" / "validation" / "ADE_val_00000001.png"
    ids = np.asarray(Image.open(path)).copy()
    ids[0, 0] = 200
    Image.fromarray(ids).save(path)
    samples = scan_ade20k(ade_copy, "validation", prompt="")  # found when the map is read
    with pytest.raises(ADE20KDataError, match=r"ADE_val_00000001.png' has class id 200 \(above 150\)"):
        ADE20KDataset(samples, 32)[0]


def test_rgb_annotation_and_missing_annotation_are_skipped(ade_copy):
    ann = ade_copy / "annotations" / "validation"
    Image.open(ann / "ADE_val_00000003.png").convert("RGB").save(ann / "ADE_val_00000003.png")
    (ann / "ADE_val_00000004.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = scan_ade20k(ade_copy, "validation", prompt="")
    text = " | ".join(str(w.message) for w in caught)
    assert "ADE_val_00000004" in text and "no annotation" in text
    assert "ADE_val_00000003 (annotation mode RGB" in text
    assert [s.name for s in samples] == NAMES[:2]
    for name in NAMES[:2]:
        (ann / f"{name}.png").unlink()
    with pytest.raises(ADE20KDataError, match="no usable image / annotation pair"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan_ade20k(ade_copy, "validation", prompt="")


def test_caption_file_naming_no_image(tmp_path):
    other = tmp_path / "captions.jsonl"
    other.write_text(json.dumps({"image": "images/training/ADE_train_00000001.jpg", "prompt": "an airport"}) + "\n")
    with pytest.raises(ADE20KDataError, match="names none of the 4 images of validation"):
        scan_ade20k(ADE20K, "validation", captions=other)
    with pytest.raises(ADE20KDataError, match="names none of the 4 maps"):
        scan_annotations(ADE20K / "annotations" / "validation", other)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"ADE_val_00000001": "a house"}))
    with pytest.warns(SkippedSampleWarning, match="3 sample.*no caption.*ADE_val_00000002"):
        assert len(scan_ade20k(ADE20K, "validation", captions=partial)) == 1
    with pytest.raises(ADE20KDataError, match="not found"):
        read_captions(tmp_path / "missing.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.jpg", "prompt": "x"}\n{oops\n')
    with pytest.raises(ADE20KDataError, match=r"broken.jsonl:2 is not valid JSON"):
        read_captions(broken)
    no_key = tmp_path / "nokey.jsonl"
    no_key.write_text('{"file": "a.jpg", "prompt": "x"}\n')
    with pytest.raises(ADE20KDataError, match="entry 1 needs a name key"):
        read_captions(no_key)
