"""Typed configs, one per protocol, validated in `__post_init__` so a bad option fails before any model loads.

Defaults are the published protocols (see configs/eval/*.yaml for each value's source). They go through the
project's one config system (`ether_diffusion.typed_config`: defaults < YAML < flags, unknown keys and wrong types
fail in one line). From the package eval imports only light modules (the config loader, the manifest schema, the
ADE20K classes, the shared errors), never training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ether_diffusion.typed_config import check_fields, config_to_dict, option
from eval.errors import EvalInputError

DREAMBOOTH_METRICS = ("dino", "clip_i", "clip_t", "lpips", "lpips_diversity")


def _need_dir(value: str, what: str, hint: str) -> None:
    if not value:  # not given (an empty path would silently mean the current folder)
        raise EvalInputError(f"{what} folder is required; {hint}")
    if not Path(value).expanduser().is_dir():
        raise EvalInputError(f"{what} folder '{value}' not found; {hint}")


@dataclass
class RuntimeOptions:
    """Options every protocol shares: where to write, on what, how fast, and with which weights mode."""

    out: str = option("eval_out", "output folder for metrics.json, report.md and grid.png")
    random_init: bool = option(False, "tiny random encoders, for tests and the offline demo; numbers mean nothing")
    seed: int = option(0, "seed of the random-init weights")
    device: str | None = option(None, "torch device; default: this process's accelerate device (cuda if any)")
    batch_size: int = option(16, "images per forward pass")
    reuse: bool = option(True, "reuse the passes an earlier run over the same files finished (<out>/cache, keyed by "
                               "file content, model and settings); false computes everything again")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size < 1:
            raise EvalInputError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class DreamBoothEvalConfig(RuntimeOptions):
    """Subject-driven protocol (DreamBooth dataset), as in OFT's official eval code reused by the ETHER paper."""

    generated: str = option("", "folder with the generated images and manifest.jsonl")
    real: str = option("", "DreamBooth dataset root: one folder of real images per subject")
    dino: str = option("facebook/dino-vits16", "DINO ViT: hub id or local folder")
    clip: str = option("openai/clip-vit-large-patch14", "CLIP for CLIP-I / CLIP-T: hub id or local folder")
    lpips_net: str = option("alex", "LPIPS trunk")
    lpips_backbone: str | None = option(None, "torchvision AlexNet weights file; default: TORCH_HOME cache")
    lpips_size: int = option(512, "LPIPS input side: images are resized to size x size")
    metrics: tuple[str, ...] = option(DREAMBOOTH_METRICS, "metrics to compute")
    real_self_pairs: bool = option(True, "add the 'real images' row: real x real pairs of each subject, i != j")
    clip_t_remove: str | None = option(None, "word removed from prompts before CLIP-T (e.g. the identifier 'sks')")
    skip_black_images: bool = option(True, "leave out all-black generated images (safety-checker output), as OFT's "
                                           "eval.py does")
    grid_subjects: int = option(6, "subjects shown in grid.png")
    grid_images: int = option(4, "real and generated images per subject in grid.png")

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

    generated: str = option("", "folder with the generated images and manifest.jsonl")
    ade_root: str = option("", "ADEChallengeData2016 folder (or its annotations folder)")
    segmenter: str = option("nvidia/segformer-b4-finetuned-ade-512-512",
                            "SegFormer / UperNet hub id or local folder")
    num_classes: int = option(150, "ADE20K SceneParse150 classes")
    reduce_zero_label: bool = option(True, "label 0 ('other') ignored, k -> k-1 (mmseg ADE20KDataset)")
    score_at: str = option("annotation", "'annotation': logits resized to the annotation's size; 'generated': "
                                         "labels resized (nearest) to the generated image's size")
    fid: bool = option(True, "also compute FID of the generated images against the original val images")
    inception_weights: str | None = option(None, "torch-fidelity Inception weights file (pt_inception-2015-12-05)")
    fid_reference: str | None = option(None, "folder of reference images; default: ade_root/images/validation")
    score_real: bool = option(False, "also segment the real val images (the segmenter's own ceiling)")
    grid_images: int = option(6, "conditions shown in grid.png")

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

    generated: str = option("", "folder of generated images (a manifest.jsonl there is used if present)")
    reference: str = option("", "folder of reference images")
    inception_weights: str | None = option(None, "torch-fidelity Inception weights file (pt_inception-2015-12-05)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _need_dir(self.generated, "generated", "pass --generated DIR of images")
        _need_dir(self.reference, "reference", "pass --reference DIR of images")


__all__ = ["DreamBoothEvalConfig", "S2IEvalConfig", "FIDEvalConfig", "config_to_dict"]
