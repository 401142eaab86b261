"""Instance folders: missing, empty, broken or odd files; the dataset's determinism; the evaluation prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ether_diffusion.data.dreambooth import DreamBoothDataset, collate, eval_prompts
from ether_diffusion.data.images import ImageDataError, SkippedImageWarning, load_rgb, scan_images

from .conftest import ASSETS, DOG, smooth_image


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ImageDataError, match="instance folder .*nope.* does not exist"):
        scan_images(tmp_path / "nope", "instance")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ImageDataError, match="is a file, not a folder"):
        scan_images(tmp_path / "file.jpg", "instance")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(ImageDataError, match="is empty"):
        scan_images(tmp_path / "empty", "instance")


def test_broken_files_are_skipped_by_name(tmp_path):
    smooth_image(0).save(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes((DOG / "00.jpg").read_bytes()[:2000])  # truncated JPEG
    with pytest.warns(SkippedImageWarning, match=r"skipping 2 file\(s\).*cut\.jpg.*notes\.txt"):
        assert [p.name for p in scan_images(tmp_path, "instance")] == ["good.png"]
    (tmp_path / "good.png").unlink()
    with pytest.warns(SkippedImageWarning), pytest.raises(ImageDataError, match="has no decodable image"):
        scan_images(tmp_path, "instance")


@pytest.mark.parametrize("mode, size", [("RGBA", (30, 70)), ("L", (90, 40)), ("P", (64, 64)), ("CMYK", (50, 50)),
                                        ("I;16", (40, 80)), ("LA", (33, 21))])
def test_odd_modes_and_sizes_become_square_rgb(tmp_path, mode, size):
    im = smooth_image(1, size)
    if mode == "I;16":  # 16-bit grey
        im = Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257)
        assert im.mode.startswith("I;16")
    else:
        im = im.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    ds = DreamBoothDataset(tmp_path, resolution=32, center_crop=False, random_flip=True)
    x = ds[0]["instance_pixels"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.01


def test_transparency_is_composited_on_white(tmp_path):
    Image.new("RGBA", (16, 24), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((3, 3)) == (255, 255, 255)


def test_augmentation_depends_only_on_seed_epoch_index(tmp_path):
    smooth_image(2, (96, 48)).save(tmp_path / "wide.png")  # landscape: random crops differ
    a = DreamBoothDataset(tmp_path, 32, random_flip=True, seed=0)
    b = DreamBoothDataset(tmp_path, 32, random_flip=True, seed=0)
    b[0], b[0]  # reading items in another order changes nothing
    assert torch.equal(a[0]["instance_pixels"], b[0]["instance_pixels"])
    views = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        views.add(a[0]["instance_pixels"].numpy().tobytes())
    assert len(views) > 1  # epochs see different crops / flips


def test_prior_batches_put_instances_first(class_dir):
    ds = DreamBoothDataset(DOG, 32, class_dir=class_dir)
    assert len(ds) == 5  # max(5 instance, 2 class images)
    assert len(DreamBoothDataset(DOG, 32, class_dir=class_dir, num_class_images=1).class_images) == 1
    batch = collate([ds[0], ds[3]])
    assert batch["pixels"].shape == (4, 3, 32, 32)
    assert batch["n_prior"] == 2


def test_eval_prompts_live_and_object():
    prompts, cls, live = eval_prompts("dog", ASSETS / "prompts_and_classes.txt", "qwe")
    assert (len(prompts), cls, live) == (25, "dog", True)
    assert prompts[0] == "a qwe dog in the jungle" and prompts[13] == "a qwe dog wearing a black top hat and a monocle"
    prompts, cls, live = eval_prompts("bear_plushie", ASSETS / "prompts_and_classes.txt", "qwe")
    assert (cls, live) == ("stuffed animal", False)
    assert prompts[10] == "a qwe stuffed animal with a wheat field in the background"
    with pytest.raises(ValueError, match="subject 'unicorn' is not in"):
        eval_prompts("unicorn", ASSETS / "prompts_and_classes.txt")
