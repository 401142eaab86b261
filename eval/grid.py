"""Image grids for the report: one labelled row per subject (or condition), cells of equal size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

from eval.ade20k import colorize, read_annotation
from eval.images import load_rgb
from eval.segmentation import reduce_zero_label

Cell = tuple[Image.Image, str]


def _fit(img: Image.Image, cell: int) -> Image.Image:
    img = img.convert("RGB")
    img.thumbnail((cell, cell), Image.BICUBIC)
    canvas = Image.new("RGB", (cell, cell), "white")
    canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
    return canvas


def make_grid(rows: Sequence[tuple[str, Sequence[Cell]]], cell: int = 128, label_h: int = 14) -> Image.Image:
    """rows of (row title, [(image, caption)]) -> one RGB image; each row starts with a title column."""
    title_w = 110
    width = title_w + cell * max((len(cells) for _, cells in rows), default=1)
    grid = Image.new("RGB", (width, max(1, len(rows)) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (title, cells) in enumerate(rows):
        y = r * (cell + label_h)
        draw.text((4, y + cell // 2), title[:18], fill="black")
        for c, (img, caption) in enumerate(cells):
            x = title_w + c * cell
            grid.paste(_fit(img, cell), (x, y))
            draw.text((x + 2, y + cell), caption[:20], fill="black")
    return grid


def dreambooth_grid(payload: dict[str, Any], n_subjects: int, n_images: int) -> Image.Image:
    """Per subject: up to n real images, then up to n generated images of each method."""
    rows = []
    for subject, real in list(payload["subjects"].items())[:n_subjects]:
        cells: list[Cell] = [(load_rgb(p), "real") for p in real[:n_images]]
        for method in payload["results"]:
            gen = [g for g in payload["generated"] if g["subject"] == subject and g["method"] == method]
            cells += [(load_rgb(g["path"]), method) for g in gen[:n_images]]
        rows.append((subject, cells))
    return make_grid(rows)


def s2i_grid(payload: dict[str, Any], n_conditions: int) -> Image.Image:
    """Per condition: the annotation (mmseg palette), the original val image, each method's generated image."""
    rows = []
    conditions = list(dict.fromkeys(g["condition"] for g in payload["generated"]))[:n_conditions]
    for condition in conditions:
        gens = [g for g in payload["generated"] if g["condition"] == condition]
        label = reduce_zero_label(read_annotation(condition, 255))
        cells: list[Cell] = [(colorize(label), "condition")]
        if gens[0]["reference"]:
            cells.append((load_rgb(gens[0]["reference"]), "real"))
        cells += [(load_rgb(g["path"]), g["method"]) for g in gens]
        rows.append((Path(condition).stem[-8:], cells))
    return make_grid(rows)
