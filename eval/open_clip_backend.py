"""CLIP-I / CLIP-T through open_clip, for protocols that use its models: `--clip open_clip:ARCH:PRETRAINED`.

PRETRAINED is an open_clip tag (e.g. `openai`, `laion2b_s34b_b79k`) or a local weights file. The known trap: OpenAI's
weights were trained with QuickGELU, but open_clip's plain `ViT-B-32` config uses GELU, so `ViT-B-32` + `openai`
silently gives other embeddings. `quick_gelu_needed` turns QuickGELU on whenever the tag's own config says so; for
a local file of OpenAI weights name the `-quickgelu` architecture (`open_clip:ViT-B-32-quickgelu:/path/file.bin`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from eval.errors import EvalInputError, ModelNotAvailableError
from eval.hub import hub_offline

PREFIX = "open_clip:"


def parse_spec(spec: str) -> tuple[str, str]:
    """'open_clip:ViT-B-32:openai' -> ('ViT-B-32', 'openai'); a Windows/posix path may follow the 2nd colon."""
    parts = spec[len(PREFIX):].split(":", 1)
    if len(parts) != 2 or not all(parts):
        raise EvalInputError(f"open_clip spec '{spec}' must be open_clip:ARCH:PRETRAINED, "
                             "e.g. open_clip:ViT-B-32:openai")
    return parts[0], parts[1]


def quick_gelu_needed(arch: str, pretrained: str) -> bool:
    """True when the weights were trained with QuickGELU and the architecture name does not already say so."""
    import open_clip

    if arch.endswith("-quickgelu") or os.path.isfile(pretrained):
        return False
    return bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))


def _cached_weights(arch: str, tag: str) -> str:
    """The tag's weights file from the HF cache only (no download when offline)."""
    import open_clip
    from huggingface_hub import hf_hub_download

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise EvalInputError(f"open_clip has no pretrained tag '{tag}' for '{arch}'; see open_clip.list_pretrained()")
    repo = cfg.get("hf_hub", "").rstrip("/")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return hf_hub_download(repo_id=repo, filename=name, local_files_only=True)
        except Exception:  # not cached under this name
            continue
    arch_to_pass = arch + ("-quickgelu" if cfg.get("quick_gelu") else "")
    raise ModelNotAvailableError(
        f"open_clip weights '{arch}' / '{tag}' are not available offline; download them on a machine with internet "
        f"(hf download {repo}) and pass --clip open_clip:{arch_to_pass}:/path/to/its/weights_file")


@dataclass
class OpenClipEncoder:
    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    device: torch.device
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(img) for img in images]).to(self.device)  # (B, 3, S, S)
        return self.model.encode_image(pixels).float().cpu()  # (B, P)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float().cpu()  # (B, P)


def load_open_clip(spec: str, device: torch.device) -> OpenClipEncoder:
    import open_clip

    arch, pretrained = parse_spec(spec)
    quick = quick_gelu_needed(arch, pretrained)
    weights = pretrained if os.path.isfile(pretrained) else (_cached_weights(arch, pretrained) if hub_offline()
                                                             else pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, force_quick_gelu=quick)
    except (RuntimeError, OSError) as err:
        raise ModelNotAvailableError(f"open_clip model '{arch}' / '{pretrained}' could not be loaded ({err}); "
                                     "pass --clip open_clip:ARCH:/path/to/weights") from err
    info = {"model": spec, "backend": "open_clip", "quick_gelu": quick or arch.endswith("-quickgelu"),
            "feature": "encode_image / encode_text"}
    return OpenClipEncoder(model.to(device).eval(), preprocess, open_clip.get_tokenizer(arch), device, spec, info)
