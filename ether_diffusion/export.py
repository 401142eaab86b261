"""Write an adapter as one standard LoRA ``.safetensors`` file, for tools that know LoRA and not ETHER (diffusers'
``pipe.load_lora_weights``, ComfyUI, AUTOMATIC1111, kohya's scripts).

A LoRA adds ``B A`` to a projection's weight. The change an ETHER-family adapter makes, ``H̃ W H - W``, is that
product exactly for ``ether`` (rank n) and ``ether_plus`` (rank 4n), in closed form (`functional.ether_lora_factors`,
`functional.ether_plus_lora_factors`); for ``oft`` and ``naive`` it is approximated by a truncated SVD of an explicit
``rank``. The factors are computed in float64 from the base weights the adapter was loaded on (the change depends on
``W``: the file belongs to that base model, which its metadata names), then cast to ``dtype``.

Key layouts (``format``), for the UNet's attention projections:

- ``diffusers``: ``unet.<module>.lora_A.weight`` (r, d) and ``unet.<module>.lora_B.weight`` (f, r), the PEFT layout
  diffusers writes; no alpha, so the scale is 1.
- ``kohya``: ``lora_unet_<module, dots as underscores>.lora_down.weight`` (r, d), ``.lora_up.weight`` (f, r) and
  ``.alpha`` = r (scale alpha / r = 1).

``<module>`` is the projection's name in the UNet, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from . import functional as Fn
from .model import check_loaded
from .outputs import atomic_write
from .projection import get_projection
from .state import EtherError, get_state

FORMATS = ("diffusers", "kohya")
EXACT_METHODS = ("ether", "ether_plus")
SUFFIX = ".safetensors"
logger = logging.getLogger(__name__)

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (B (f, r), A (r, d))


class ExportError(ValueError):
    """An export that cannot be written as asked (unknown format, a missing rank, a model it does not fit)."""


def exact_rank(method: str, n_blocks: int, output_side: bool = True) -> int | None:
    """The rank of the closed-form factors: n for ``ether``, 4n for ``ether_plus`` (2n without an output side);
    None for methods exported by SVD."""
    if method == "ether":
        return n_blocks
    if method == "ether_plus":
        return 4 * n_blocks if output_side else 2 * n_blocks
    return None


def layer_factors(weight: torch.Tensor, method: str, p_in: Fn.Params, p_out: Fn.Params | None,
                  rank: int | None = None, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B (f, r), A (r, d), relative error) for one projection: the factors computed in float64 and cast to ``dtype``,
    and ``‖ΔW - B A‖_F / ‖ΔW‖_F`` of the cast factors, with ``ΔW = H̃ W H - W``.

    ``rank`` None (or the exact rank) takes the closed form for ``ether`` / ``ether_plus``; any other rank, and the
    other methods, a truncated SVD of the change.
    """
    w = weight.detach().to("cpu", torch.float64)  # (f, d)
    p_in = {k: t.detach().to("cpu", torch.float64) for k, t in p_in.items()}
    p_out = None if p_out is None else {k: t.detach().to("cpu", torch.float64) for k, t in p_out.items()}
    delta = Fn.fold_weight(w, method, p_in, p_out) - w  # (f, d)
    n_blocks = next(iter(p_in.values())).shape[0]
    if rank is None or rank == exact_rank(method, n_blocks, p_out is not None):
        if method == "ether":
            b, a = Fn.ether_lora_factors(w, p_in)
        elif method == "ether_plus":
            b, a = Fn.ether_plus_lora_factors(w, p_in, p_out)
        else:
            raise ExportError(f"method {method!r} has no exact low-rank form; pass rank=... (a truncated SVD)")
    else:
        b, a, _ = Fn.svd_lora_factors(delta, rank)
    b, a = b.to(dtype), a.to(dtype)
    norm = delta.norm()
    error = float((delta - b.double() @ a.double()).norm() / norm) if norm > 0 else 0.0
    return b, a, error


def lora_keys(module: str, format: str) -> tuple[str, str, str | None]:
    """(key of A, key of B, key of alpha or None) of the projection ``module`` (its name in the UNet)."""
    if format == "diffusers":
        return f"unet.{module}.lora_A.weight", f"unet.{module}.lora_B.weight", None
    if format == "kohya":
        name = "lora_unet_" + module.replace(".", "_")
        return f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"
    raise ExportError(f"unknown LoRA format {format!r}; choose one of {', '.join(FORMATS)}")


def lora_state_dict(factors: Factors, format: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file: each module's A and B cast to ``dtype`` (and, for kohya, alpha = its rank)."""
    out: dict[str, torch.Tensor] = {}
    for module, (b, a) in factors.items():
        key_a, key_b, key_alpha = lora_keys(module, format)
        out[key_a] = a.to(dtype).contiguous()
        out[key_b] = b.to(dtype).contiguous()
        if key_alpha is not None:
            out[key_alpha] = torch.tensor(float(a.shape[0]), dtype=dtype)
    return out


def check_lora_file(file: str | os.PathLike, format: str) -> Path:
    """The output path as a Path, after checking ``format`` and the ``.safetensors`` suffix."""
    lora_keys("m", format)  # raises for an unknown format
    path = Path(file)
    if path.suffix != SUFFIX:
        raise ExportError(f"a LoRA file ends in {SUFFIX}; got {str(path)!r}")
    return path


def write_lora(factors: Factors, file: str | os.PathLike, format: str, dtype: torch.dtype,
               metadata: dict[str, str]) -> Path:
    """Write ``factors`` as one LoRA file (written to a temporary name, then renamed); returns its path."""
    path = check_lora_file(file, format)
    tensors = lora_state_dict(factors, format, dtype)
    meta = {"format": "pt", "lora_format": format, "dtype": str(dtype).removeprefix("torch."),
            "ether_diffusion_version": __version__, **metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path


def read_lora_metadata(file: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a LoRA file (what `export_lora` recorded)."""
    with safe_open(str(file), framework="pt") as f:
        return dict(f.metadata() or {})


def _base_model_name(model: nn.Module, base_model: str | None) -> str:
    if base_model:
        return base_model
    config = getattr(model, "config", None)
    name = config.get("_name_or_path") if hasattr(config, "get") else None
    return name or "unknown"


def _check_unet(model: nn.Module) -> None:
    from diffusers import UNet2DConditionModel

    if not isinstance(model, UNet2DConditionModel):
        raise ExportError(f"LoRA files hold UNet layers; {type(model).__name__} is not a UNet2DConditionModel")


def _base_weight(module: nn.Module, layer: str) -> torch.Tensor:
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = base.weight
    if weight.device.type == "meta":
        raise ExportError(f"the weight of {layer} is offloaded (meta); export before enabling CPU offload")
    return weight


@torch.no_grad()
def export_lora(model: nn.Module, file: str | os.PathLike, format: str = "diffusers", adapter_name: str | None = None,
                dtype: torch.dtype = torch.float32, rank: int | None = None, base_model: str | None = None) -> Path:
    """Write the (active or named) ETHER-family adapter of the UNet ``model`` as one LoRA ``.safetensors`` file.

    ``ether`` and ``ether_plus`` are exact at their own rank (n, 4n) when ``rank`` is None; ``oft`` and ``naive``
    need ``rank`` (a truncated SVD; the worst layer's relative error is logged). The recorded max_relative_error is
    the worst layer's ``‖ΔW - B A‖_F / ‖ΔW‖_F`` with the factors as written (in ``dtype``). The change is taken
    against the projections' base weights (a PEFT LoRA layer's base layer; a LoRA itself is not exported). The
    metadata records method, n_blocks, rank, lora_format, base_model (default: the model's ``_name_or_path``),
    max_relative_error and the library version.
    """
    path = check_lora_file(file, format)
    _check_unet(model)
    state = get_state(model)
    if state.merged:
        raise EtherError("the ETHER adapter is merged into the weights, whose change from the base model is no longer "
                         "known; export from the unmerged model (unmerge_ether first)")
    check_loaded(model, adapter_name)
    method, n_blocks = state.config.method, state.config.n_blocks
    if rank is None and method not in EXACT_METHODS:
        raise ExportError(f"{method} has no exact low-rank form; pass a rank (the LoRA is then a truncated SVD)")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ExportError(f"rank must be a positive integer, got {rank!r}")
    factors: Factors = {}
    errors: dict[str, float] = {}
    for attn_name, proc in state.processors.items():
        attn = state.attentions[attn_name]
        for p in proc.shapes:
            layer = f"{attn_name}.{p}"
            p_in, p_out = proc.adapter(p, adapter_name).params()
            b, a, errors[layer] = layer_factors(_base_weight(get_projection(attn, p), layer), method, p_in, p_out,
                                                rank, dtype)
            factors[layer] = (b, a)
    worst = max(errors, key=errors.get)
    ranks = sorted({a.shape[0] for _, a in factors.values()})
    if rank is not None and rank != exact_rank(method, n_blocks, method in Fn.OUTPUT_SIDE_METHODS):
        logger.warning("rank-%d SVD export of %s: worst relative error %.3g (%s)", rank, method, errors[worst], worst)
    metadata = {"method": method, "n_blocks": str(n_blocks), "rank": ",".join(map(str, ranks)),
                "base_model": _base_model_name(model, base_model), "max_relative_error": f"{errors[worst]:.3g}",
                "worst_layer": worst}
    return write_lora(factors, path, format, dtype, metadata)


@torch.no_grad()
def export_peft_lora(model: nn.Module, file: str | os.PathLike, format: str = "diffusers",
                     adapter_name: str | None = None, dtype: torch.dtype = torch.float32,
                     base_model: str | None = None) -> Path:
    """Write a PEFT LoRA of the UNet ``model`` (e.g. loaded with ``training.adapters.load_adapter``) in ``format``:
    the same factors under the other keys, with PEFT's scale (alpha / r) folded into B so that the file's scale is 1.
    """
    from peft.tuners.lora import LoraLayer

    path = check_lora_file(file, format)
    _check_unet(model)
    if get_state(model, required=False) is not None:
        raise ExportError("the model also has an ETHER adapter; export it with export_lora")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        raise ExportError(f"{type(model).__name__} has no LoRA layers to export")
    name = adapter_name or next(iter(next(iter(layers.values())).lora_A))
    factors: Factors = {}
    for module_name, layer in layers.items():
        if name not in layer.lora_A:
            raise ExportError(f"LoRA adapter {name!r} is not on {module_name}; loaded: {list(layer.lora_A)}")
        if getattr(layer, "use_dora", {}).get(name):
            raise ExportError(f"{module_name} is a DoRA layer, which a plain LoRA file cannot hold")
        factors[module_name] = (layer.lora_B[name].weight.double().cpu() * layer.scaling[name],
                                layer.lora_A[name].weight.double().cpu())
    ranks = sorted({a.shape[0] for _, a in factors.values()})
    metadata = {"method": "lora", "n_blocks": "none", "rank": ",".join(map(str, ranks)),
                "base_model": _base_model_name(model, base_model)}
    return write_lora(factors, path, format, dtype, metadata)
