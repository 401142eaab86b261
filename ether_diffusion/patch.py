"""apply / merge / unmerge / remove ETHER-family adapters on any diffusers model with `Attention` layers.

Works on `UNet2DConditionModel` (SD 1.x / 2.x) and `ControlNetModel`: processors are installed with the model's
`set_attn_processor`, and the bookkeeping lives in a plain attribute ``model._ether`` (an `EtherState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from . import functional as Fn
from .config import PROJECTIONS, EtherConfig
from .processor import EtherAttnProcessor, get_projection
from .kernels import attach, detach

STATE_ATTR = "_ether"


class EtherError(RuntimeError):
    """ETHER was used on a model in the wrong state (not applied, applied twice, already merged...)."""


@dataclass
class EtherState:
    config: EtherConfig
    layers: dict[str, tuple[int, int]]  # "<attn>.<projection>" -> (out_features, in_features)
    original_processors: dict  # processor name -> the processor found at apply time
    processors: dict[str, EtherAttnProcessor]  # attention module name -> our processor
    requires_grad: dict[str, bool]  # base parameter name -> its flag before apply
    merged: bool = False
    saved_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # for exact unmerge of non-involutions
    attention: str = "sdpa"


# ------------------------------------------------------------------ discovery
def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Attention modules by name, in the order of ``model.attn_processors``."""
    if not hasattr(model, "attn_processors"):
        raise EtherError(f"{type(model).__name__} has no attention processors; pass a diffusers UNet or ControlNet")
    return {name[: -len(".processor")]: model.get_submodule(name[: -len(".processor")])
            for name in model.attn_processors}


def target_layers(model: nn.Module, config: EtherConfig) -> dict[str, tuple[int, int]]:
    """'<attn>.<projection>' -> (out_features, in_features) for every projection the config targets.

    Raises if nothing matches or if ``n_blocks`` does not divide a dimension it must split.
    """
    layers: dict[str, tuple[int, int]] = {}
    for attn_name, attn in attention_modules(model).items():
        for p in PROJECTIONS:
            if not config.matches(attn_name, p):
                continue
            linear = get_projection(attn, p)
            f, d = linear.out_features, linear.in_features
            dims = [("in_features", d)] + ([("out_features", f)] if config.method in Fn.OUTPUT_SIDE_METHODS else [])
            for label, dim in dims:
                if dim % config.n_blocks:
                    raise ValueError(f"n_blocks={config.n_blocks} does not divide {label}={dim} of "
                                     f"{attn_name}.{p}; choose a divisor of {dim}")
            layers[f"{attn_name}.{p}"] = (f, d)
    if not layers:
        raise ValueError(f"target_modules {list(config.target_modules)} match no projection of "
                         f"{type(model).__name__}; use names like {list(PROJECTIONS)}")
    return layers


def get_state(model: nn.Module, required: bool = True) -> EtherState | None:
    state = getattr(model, STATE_ATTR, None)
    if state is None and required:
        raise EtherError("no ETHER adapter on this model; call apply_ether(model, config) or load_ether first")
    return state


def _split(layer: str) -> tuple[str, str]:
    # "a.b.attn1.to_out.0" -> ("a.b.attn1", "to_out.0")
    for p in PROJECTIONS:
        if layer.endswith("." + p):
            return layer[: -len(p) - 1], p
    raise ValueError(layer)


# ------------------------------------------------------------------ apply / remove
def apply_ether(model: nn.Module, config: EtherConfig, attention: str = "sdpa") -> nn.Module:
    """Install ETHER processors on every attention layer with a targeted projection; freeze everything else.

    Adapter parameters are float32 on the device of the model. ``attention`` is "sdpa" (default) or "xformers".
    """
    if get_state(model, required=False) is not None:
        raise EtherError("this model already has an ETHER adapter; remove_ether(model) first")
    if attention not in ("sdpa", "xformers"):
        raise ValueError(f"attention must be 'sdpa' or 'xformers', got {attention!r}")
    if attention == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise ImportError("attention='xformers' needs xformers: pip install xformers") from None
    layers = target_layers(model, config)  # validates before anything changes
    generator = torch.Generator().manual_seed(config.init_seed) if config.init_seed is not None else None
    device = next(model.parameters()).device

    by_attn: dict[str, dict[str, tuple[int, int]]] = {}
    for layer, shape in layers.items():
        attn_name, p = _split(layer)
        by_attn.setdefault(attn_name, {})[p] = shape
    processors = {name: EtherAttnProcessor(config.method, config.n_blocks, shapes, generator, attention).to(device)
                  for name, shapes in by_attn.items()}

    original = dict(model.attn_processors)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    model.set_attn_processor({k: processors.get(k[: -len(".processor")], proc) for k, proc in original.items()})
    setattr(model, STATE_ATTR, EtherState(config, layers, original, processors, requires_grad, attention=attention))
    attach(model)  # the fused step-fold path (kernels/): one shared fold per model, lazy, nothing on CPU
    return model


def ether_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter parameters (all named adapters of every processor)."""
    state = get_state(model)
    return [p for proc in state.processors.values() for p in proc.parameters()]


def remove_ether(model: nn.Module) -> nn.Module:
    """Take the adapter off: unmerge if merged, restore the original processors and ``requires_grad`` flags."""
    state = get_state(model)
    if state.merged:
        unmerge_ether(model)
    model.set_attn_processor(dict(state.original_processors))
    detach(model)
    for n, p in model.named_parameters():
        p.requires_grad_(state.requires_grad.get(n, p.requires_grad))
    delattr(model, STATE_ATTR)
    return model


# ------------------------------------------------------------------ merge / unmerge
@torch.no_grad()
def merge_ether(model: nn.Module) -> nn.Module:
    """Fold the active adapter into the projection weights and restore the original processors.

    The merged model runs at exactly the base model's speed. ``ether`` unmerges by reflecting again; the other
    methods keep a copy of each original weight so that ``unmerge_ether`` restores it bit for bit.
    """
    state = get_state(model)
    if state.merged:
        raise EtherError("the ETHER adapter is already merged")
    for attn_name, proc in state.processors.items():
        attn = model.get_submodule(attn_name)
        for p in proc.shapes:
            linear = get_projection(attn, p)
            p_in, p_out = proc.adapter(p).params()
            if state.config.method != "ether":
                state.saved_weights[f"{attn_name}.{p}"] = linear.weight.detach().clone()
            linear.weight.copy_(Fn.fold_weight(linear.weight, state.config.method, p_in, p_out))
    model.set_attn_processor(dict(state.original_processors))
    state.merged = True
    return model


@torch.no_grad()
def unmerge_ether(model: nn.Module) -> nn.Module:
    """Give back the original weights and reinstall the ETHER processors."""
    state = get_state(model)
    if not state.merged:
        raise EtherError("the ETHER adapter is not merged")
    for attn_name, proc in state.processors.items():
        attn = model.get_submodule(attn_name)
        proc.to(next(attn.parameters()).device)
        for p in proc.shapes:
            linear = get_projection(attn, p)
            if state.config.method == "ether":
                p_in, _ = proc.adapter(p).params()
                linear.weight.copy_(Fn.unfold_weight(linear.weight, "ether", p_in))
            else:
                linear.weight.copy_(state.saved_weights.pop(f"{attn_name}.{p}"))
    original = dict(model.attn_processors)
    model.set_attn_processor({k: state.processors.get(k[: -len(".processor")], v) for k, v in original.items()})
    state.merged = False
    return model


def adapter_state_dict(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """'<attn>.<projection>.<in|out>.<param>' -> tensor, for one named adapter (the active one by default)."""
    state = get_state(model)
    out: dict[str, torch.Tensor] = {}
    for attn_name, proc in state.processors.items():
        for p in proc.shapes:
            p_in, p_out = proc.adapter(p, adapter_name).params()
            for side, params in (("in", p_in), ("out", p_out)):
                for k, t in (params or {}).items():
                    out[f"{attn_name}.{p}.{side}.{k}"] = t.detach()
    return out

