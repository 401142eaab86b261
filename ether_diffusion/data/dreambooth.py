"""DreamBooth data: instance images (+ class images for prior preservation) and the evaluation prompt lists.

Augmentation (random crop, horizontal flip) is a pure function of ``(seed, epoch, index)``: an item looks the same
however the data loader prefetches, so a resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import crop_box, fixed_crop, load_rgb, resize_and_crop, scan_images, to_tensor
from ..names import PROMPTS_FILE

# classes whose subjects use the "live subject" prompt list (the dogs and cats of the dataset)
LIVE_CLASSES = ("dog", "cat")


class DreamBoothDataset(Dataset):
    """Item i: instance image ``i % n_instance`` and, with a class folder, class image ``i % n_class``.

    Each image is (3, resolution, resolution) in [-1, 1]. With ``cached`` an item names rows of a posterior cache
    instead (`cache_images` lists the images of those rows: every image, and its mirror image with ``random_flip``);
    the random numbers drawn per item are the same either way, so both give the same crops and flips.
    """

    def __init__(self, instance_dir: str | Path, resolution: int, center_crop: bool = False,
                 random_flip: bool = False, class_dir: str | Path | None = None, seed: int = 0,
                 num_class_images: int | None = None, cached: bool = False):
        self.instance_images = scan_images(instance_dir, "instance")
        # like diffusers' DreamBooth scripts, use the first num_class_images of a larger class folder
        self.class_images = scan_images(class_dir, "class")[:num_class_images] if class_dir is not None else []
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.seed, self.cached = seed, cached
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent loader workers
        self._sizes: list[tuple[int, int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __len__(self) -> int:
        return max(len(self.instance_images), len(self.class_images))

    # ---- posterior cache
    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every instance image, then every class image, as loaded (EXIF rotation applied)."""
        if self._sizes is None:
            self._sizes = [load_rgb(p).size for p in self.instance_images + self.class_images]
        return self._sizes

    def fixed_crops(self) -> bool:
        """Whether every image gives the same pixels at every epoch (up to its flip): what a cache needs."""
        return all(fixed_crop(size, self.resolution, self.center_crop) for size in self.sizes)

    @property
    def flips(self) -> int:
        return 2 if self.random_flip else 1

    def cache_images(self) -> Iterator[torch.Tensor]:
        """The (3, R, R) image of every cache row, in row order: instance images, then class images; each followed by
        its mirror image with ``random_flip``."""
        for path in self.instance_images + self.class_images:
            x = to_tensor(resize_and_crop(load_rgb(path), self.resolution, True))
            yield x
            if self.random_flip:
                yield x.flip(-1)

    def _row(self, j: int, rng: random.Random) -> int:
        """Cache row of image ``j`` (instance images first), drawing from ``rng`` what `_load` draws."""
        crop_box(self.sizes[j], self.resolution, self.center_crop, rng)
        flip = self.random_flip and rng.random() < 0.5
        return j * self.flips + int(flip)

    # ---- items
    def _load(self, path: Path, rng: random.Random) -> torch.Tensor:
        im = resize_and_crop(load_rgb(path), self.resolution, self.center_crop, rng)
        x = to_tensor(im)  # (3, R, R)
        if self.random_flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        n_inst = len(self.instance_images)
        if self.cached:
            item = {"instance_row": self._row(i % n_inst, rng)}
            if self.class_images:
                item["class_row"] = self._row(n_inst + i % len(self.class_images), rng)
            return item
        item = {"instance_pixels": self._load(self.instance_images[i % n_inst], rng)}
        if self.class_images:
            item["class_pixels"] = self._load(self.class_images[i % len(self.class_images)], rng)
        return item


def collate(examples: list[dict]) -> dict:
    """Instance images first, then class images: {"pixels": (B or 2B, 3, R, R)} (or {"rows": [B or 2B ints]} for a
    cached dataset) and "n_prior" (0 or B, a Python int: no device read needed)."""
    if "instance_row" in examples[0]:
        rows = [e["instance_row"] for e in examples] + [e["class_row"] for e in examples if "class_row" in e]
        return {"rows": rows, "n_prior": len(rows) - len(examples)}
    pixels = [e["instance_pixels"] for e in examples]
    prior = [e["class_pixels"] for e in examples if "class_pixels" in e]
    return {"pixels": torch.stack(pixels + prior).contiguous(memory_format=torch.contiguous_format),
            "n_prior": len(prior)}


# ------------------------------------------------------------------ evaluation prompts
def read_prompts_file(path: str | Path) -> tuple[dict[str, str], list[str], list[str]]:
    """DreamBooth's ``prompts_and_classes.txt`` -> (subject -> class, object templates, live templates).

    Templates use ``{0}`` for the unique token and ``{1}`` for the class, as in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} not found; it is dataset/{PROMPTS_FILE} of "
                                "google/dreambooth (a copy ships in ether_diffusion/assets/dreambooth/)")
    text = path.read_text()
    classes = dict(re.findall(r"^(\w+),([^,\n]+)$", text.split("Prompts")[0], flags=re.M))
    classes.pop("subject_name", None)
    lists = re.findall(r"prompt_list = \[(.*?)\]", text, flags=re.S)
    if len(lists) != 2 or not classes:
        raise ValueError(f"{path} does not look like DreamBooth's {PROMPTS_FILE} (need a class table and two lists)")
    object_t, live_t = ([m for m in re.findall(r"'([^']*)'\.format", block)] for block in lists)
    return classes, object_t, live_t


def eval_prompts(subject: str, prompts_file: str | Path, unique_token: str = "sks",
                 class_token: str | None = None) -> tuple[list[str], str, bool]:
    """The 25 evaluation prompts of ``subject`` -> (prompts, class token, is_live)."""
    classes, object_t, live_t = read_prompts_file(prompts_file)
    if class_token is None:
        if subject not in classes:
            raise ValueError(f"subject {subject!r} is not in {prompts_file}; pass its class token "
                             f"(known subjects: {', '.join(sorted(classes))})")
        class_token = classes[subject]
    live = class_token in LIVE_CLASSES
    return [t.format(unique_token, class_token) for t in (live_t if live else object_t)], class_token, live
