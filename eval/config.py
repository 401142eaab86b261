"""Typed configs, one per protocol, validated in `__post_init__` so a bad option fails before any model loads.

Defaults are the published protocols (see configs/eval/*.yaml for each value's source). `load_config` reads a YAML
file into one of these; unknown keys and wrong types fail loudly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eval.errors import EvalInputError

DREAMBOOTH_METRICS = ("dino", "clip_i", "clip_t", "lpips", "lpips_diversity")


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    return field(default=default, metadata={"help": text}, **kw)


def _need_dir(value: str, what: str, hint: str) -> None:
    if not Path(value).expanduser().is_dir():
        raise EvalInputError(f"{what} folder '{value}' not found; {hint}")


@dataclass
class RuntimeOptions:
    """Options every protocol shares: where to write, on what, how fast, and with which weights mode."""

    out: str = _help("output folder for metrics.json, report.md and grid.png", "eval_out")
    random_init: bool = _help("tiny random encoders, for tests and the offline demo; numbers mean nothing", False)
    seed: int = _help("seed of the random-init weights", 0)
    device: str | None = _help("torch device; default: this process's accelerate device (cuda if any)", None)
    batch_size: int = _help("images per forward pass", 16)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise EvalInputError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class DreamBoothEvalConfig(RuntimeOptions):
    """Subject-driven protocol (DreamBooth dataset), as in OFT's official eval code reused by the ETHER paper."""

    generated: str = _help("folder with the generated images and manifest.jsonl", "")
    real: str = _help("DreamBooth dataset root: one folder of real images per subject", "")
    dino: str = _help("DINO ViT: hub id or local folder", "facebook/dino-vits16")
    clip: str = _help("CLIP for CLIP-I / CLIP-T: hub id or local folder", "openai/clip-vit-large-patch14")
    lpips_net: str = _help("LPIPS trunk", "alex")
    lpips_backbone: str | None = _help("torchvision AlexNet weights file; default: TORCH_HOME cache", None)
    lpips_size: int = _help("LPIPS input side: images are resized to size x size", 512)
    metrics: tuple[str, ...] = _help("metrics to compute", DREAMBOOTH_METRICS)
    real_self_pairs: bool = _help("add the 'real images' row: real x real pairs of each subject, i != j", True)
    clip_t_remove: str | None = _help("word removed from prompts before CLIP-T (e.g. the identifier 'sks')", None)
    skip_black_images: bool = _help("leave out all-black generated images (safety-checker output), as OFT's "
                                    "eval.py does", True)
    grid_subjects: int = _help("subjects shown in grid.png", 6)
    grid_images: int = _help("real and generated images per subject in grid.png", 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        _need_dir(self.generated, "generated", "pass --generated DIR holding manifest.jsonl")
        _need_dir(self.real, "real", "pass --real pointing at the DreamBooth dataset (one folder per subject)")
        unknown = set(self.metrics) - set(DREAMBOOTH_METRICS)
        if unknown or not self.metrics:
            raise EvalInputError(f"unknown metrics {sorted(unknown)}; choose from {list(DREAMBOOTH_METRICS)}")
        if self.lpips_net != "alex":
            raise EvalInputError(f"lpips_net '{self.lpips_net}' is not the protocol's; only 'alex' is supported")
        if self.lpips_size < 32:
            raise EvalInputError(f"lpips_size must be >= 32, got {self.lpips_size}")


@dataclass
class S2IEvalConfig(RuntimeOptions):
    """Segmentation-to-image on ADE20K: segment each generated image, score it against its annotation, plus FID."""

    generated: str = _help("folder with the generated images and manifest.jsonl", "")
    ade_root: str = _help("ADEChallengeData2016 folder (or its annotations folder)", "")
    segmenter: str = _help("SegFormer / UperNet hub id or local folder", "nvidia/segformer-b4-finetuned-ade-512-512")
    num_classes: int = _help("ADE20K SceneParse150 classes", 150)
    reduce_zero_label: bool = _help("label 0 ('other') ignored, k -> k-1 (mmseg ADE20KDataset)", True)
    score_at: str = _help("'annotation': logits resized to the annotation's size; 'generated': labels resized "
                          "(nearest) to the generated image's size", "annotation")
    fid: bool = _help("also compute FID of the generated images against the original val images", True)
    inception_weights: str | None = _help("torch-fidelity Inception weights file (pt_inception-2015-12-05)", None)
    fid_reference: str | None = _help("folder of reference images; default: ade_root/images/validation", None)
    score_real: bool = _help("also segment the real val images (the segmenter's own ceiling)", False)
    grid_images: int = _help("conditions shown in grid.png", 6)

    def __post_init__(self) -> None:
        super().__post_init__()
        _need_dir(self.generated, "generated", "pass --generated DIR holding manifest.jsonl")
        _need_dir(self.ade_root, "ADE20K", "pass --ade-root pointing at ADEChallengeData2016")
        if self.score_at not in ("annotation", "generated"):
            raise EvalInputError(f"score_at must be 'annotation' or 'generated', got '{self.score_at}'")
        if not 1 <= self.num_classes <= 254:
            raise EvalInputError(f"num_classes must be in 1..254 (255 is the ignore index), got {self.num_classes}")
        if self.fid_reference is not None:
            _need_dir(self.fid_reference, "FID reference", "pass --fid-reference DIR of real images")


@dataclass
class FIDEvalConfig(RuntimeOptions):
    """Folder-vs-folder FID with torch-fidelity's TF-compatible InceptionV3 (2048-d pool features)."""

    generated: str = _help("folder of generated images (a manifest.jsonl there is used if present)", "")
    reference: str = _help("folder of reference images", "")
    inception_weights: str | None = _help("torch-fidelity Inception weights file (pt_inception-2015-12-05)", None)

    def __post_init__(self) -> None:
        super().__post_init__()
        _need_dir(self.generated, "generated", "pass --generated DIR of images")
        _need_dir(self.reference, "reference", "pass --reference DIR of images")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def config_from_dict(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build `cls` from a plain dict; unknown keys and wrong types raise `EvalInputError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise EvalInputError(f"{source}: unknown keys {unknown}; valid keys are {sorted(names)}")
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            raise EvalInputError(f"{source}: '{key}' must be {hints[key]}, got {value!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path` (empty file -> {})."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a mapping of option: value")
    return data


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as JSON-ready values (for metrics.json)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
