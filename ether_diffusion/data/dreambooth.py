"""DreamBooth data: instance images (+ class images for prior preservation) and the evaluation prompt lists.

Augmentation (random crop, horizontal flip) is a pure function of ``(seed, epoch, index)``: an item looks the same
however the data loader prefetches, so a resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import load_rgb, resize_and_crop, scan_images, to_tensor
from ..names import PROMPTS_FILE

# classes whose subjects use the "live subject" prompt list (the dogs and cats of the dataset)
LIVE_CLASSES = ("dog", "cat")


class DreamBoothDataset(Dataset):
    """Item i: instance image ``i % n_instance`` and, with a class folder, class image ``i % n_class``.

    Each image is (3, resolution, resolution) in [-1, 1].
    """

    def __init__(self, instance_dir: str | Path, resolution: int, center_crop: bool = False,
                 random_flip: bool = False, class_dir: str | Path | None = None, seed: int = 0,
                 num_class_images: int | None = None):
        self.instance_images = scan_images(instance_dir, "instance")
        # like diffusers' DreamBooth scripts, use the first num_class_images of a larger class folder
        self.class_images = scan_images(class_dir, "class")[:num_class_images] if class_dir is not None else []
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(len(self.instance_images), len(self.class_images))

    def _load(self, path: Path, rng: random.Random) -> torch.Tensor:
        im = resize_and_crop(load_rgb(path), self.resolution, self.center_crop, rng)
        x = to_tensor(im)  # (3, R, R)
        if self.random_flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        item = {"instance_pixels": self._load(self.instance_images[i % len(self.instance_images)], rng)}
        if self.class_images:
            item["class_pixels"] = self._load(self.class_images[i % len(self.class_images)], rng)
        return item


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Instance images first, then class images: {"pixels": (B or 2B, 3, R, R), "is_prior": (B or 2B,) bool}."""
    pixels = [e["instance_pixels"] for e in examples]
    prior = [e["class_pixels"] for e in examples if "class_pixels" in e]
    return {"pixels": torch.stack(pixels + prior).contiguous(memory_format=torch.contiguous_format),
            "is_prior": torch.tensor([False] * len(pixels) + [True] * len(prior))}


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
