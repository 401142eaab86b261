"""Every model-level verb of ETHER-family adapters on any diffusers model with `Attention` layers: apply / remove,
merge / unmerge, the trainable parameters, the adapters' values by name, named adapters (``adapter_names``,
``set_active_adapter``), how mixed batches run (``set_mixed_form``) and how projections run (``set_impl``).

Works on `UNet2DConditionModel` (SD 1.x / 2.x) and `ControlNetModel`: processors (``layer.EtherAttnProcessor``) are
installed on each adapted `Attention`, and the bookkeeping lives in a plain attribute ``model._ether`` (a
``state.EtherState``). ``hooks`` keeps diffusers' own switches (attention slicing, xformers, processor changes,
``save_pretrained``) from turning the adapter off silently. On CUDA with triton, ether and ether_plus models carry
one ``kernels.StepFold`` shared by their processors: every layer folded once per forward.

Composition with a LoRA (PEFT / diffusers, e.g. ``pipe.load_lora_weights``) on the same projection, in either order:
the processor calls the projection module on the transformed input, so the LoRA sees the reflected input,
``y = H̃ (W + s B A) H x + b``. ``merge_ether`` folds the maps into ``W`` and into the LoRA's factors
(``W <- H̃ W H``, ``A <- A H``, ``B <- H̃ B``), which leaves every output unchanged at any LoRA scale ``s``.
"""

from __future__ import annotations

import importlib
from types import MethodType

import torch
import torch.nn as nn

from . import functional as Fn
from . import hooks
from .config import PROJECTIONS, EtherConfig
from .kernels import TRITON_METHODS, StepFold, triton_available
from .layer import DEFAULT_ADAPTER, IMPLS, MIXED_FORMS, EtherAttnProcessor, check_adapter_name, stock_options
from .projection import get_projection
from .state import STATE_ATTR, EtherError, EtherState, UnknownAdapterError, get_state

__all__ = ["EtherError", "EtherState", "adapter_names", "adapter_state_dict", "apply_ether", "attention_modules",
           "check_loaded", "ether_parameters", "get_state", "load_adapter_state_dict", "merge_ether",
           "prepare_adapter", "remove_ether", "set_active_adapter", "set_impl", "set_mixed_form", "split_layer_name",
           "target_layers", "unmerge_ether"]


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


def split_layer_name(layer: str) -> tuple[str, str]:
    """'<attn>.<projection>' -> (attention module name, projection), e.g. "a.attn1.to_out.0" -> ("a.attn1", "to_out.0")."""
    for p in PROJECTIONS:
        if layer.endswith("." + p):
            return layer[: -len(p) - 1], p
    raise ValueError(layer)


# ------------------------------------------------------------------ apply / remove
def apply_ether(model: nn.Module, config: EtherConfig, attention: str | None = None) -> nn.Module:
    """Install ETHER processors on every attention layer with a targeted projection; freeze everything else.

    Adapter parameters are float32 on the device of the model, and stay at least float32 when it is cast.
    ``attention`` is "sdpa" or "xformers"; None keeps what the model's processors use (attention slicing too).
    Layers whose processor is not one of diffusers' stock ones (an IP-Adapter's, fused projections) are refused.
    """
    if get_state(model, required=False) is not None:
        raise EtherError("this model already has an ETHER adapter; remove_ether(model) first")
    if attention not in (None, "sdpa", "xformers"):
        raise ValueError(f"attention must be 'sdpa' or 'xformers', got {attention!r}")
    if attention == "xformers":
        try:
            importlib.import_module("xformers.ops")
        except ImportError:
            raise ImportError("attention='xformers' needs xformers: pip install xformers") from None
    layers = target_layers(model, config)  # validates before anything changes
    generator = torch.Generator().manual_seed(config.init_seed) if config.init_seed is not None else None
    device = next(model.parameters()).device

    by_attn: dict[str, dict[str, tuple[int, int]]] = {}
    for layer, shape in layers.items():
        attn_name, p = split_layer_name(layer)
        by_attn.setdefault(attn_name, {})[p] = shape
    attentions = {name: model.get_submodule(name) for name in by_attn}
    original = {name: attn.processor for name, attn in attentions.items()}
    processors = {}
    for name, shapes in by_attn.items():
        try:
            options = stock_options(original[name])  # slicing / xformers carried over; anything else refused
        except EtherError:
            raise EtherError(f"{name} uses {type(original[name]).__name__}, which ETHER would replace; apply ETHER "
                             "on diffusers' stock processors (unload the IP-Adapter, unfuse_qkv_projections) or "
                             "load it after merge_ether") from None
        if attention is not None:
            options["attention"] = attention
        processors[name] = EtherAttnProcessor(config.method, config.n_blocks, shapes, generator, **options).to(device)

    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    state = EtherState(config, layers, original, processors, requires_grad, attentions)
    setattr(model, STATE_ATTR, state)
    for name, attn in attentions.items():
        hooks.install(attn, processors[name])
        attn.set_processor = MethodType(hooks.set_processor, attn)
    for method, guard in hooks.GUARDED_MODEL_METHODS.items():
        if hasattr(type(model), method):
            setattr(model, method, MethodType(guard, model))
    model.register_forward_pre_hook(hooks.on_forward, with_kwargs=True)
    model.register_load_state_dict_post_hook(hooks.drop_missing_adapter_keys)
    _attach_step_fold(model, state)
    return model


def _attach_step_fold(model: nn.Module, state: EtherState) -> None:
    # one StepFold shared by the processors (cheap, lazy: nothing is folded before a forward on the device); each
    # layer is its projection's own nn.Linear (a LoRA layer's base layer): the step fold serves a projection while
    # that very module is called bare (``projection.is_plain``)
    if state.config.method not in TRITON_METHODS or not triton_available():
        return
    layers = [(proc, p, _base_layer(get_projection(state.attentions[name], p)))
              for name, proc in state.processors.items() for p in proc.shapes]
    cross = frozenset(id(proc) for name, proc in state.processors.items()
                      if getattr(state.attentions[name], "is_cross_attention", False))
    state.step_fold = StepFold(layers, state.config.method, state.config.n_blocks, cross, state.forwards)
    for proc in state.processors.values():
        proc.step_fold = state.step_fold
    model.register_forward_pre_hook(hooks.drop_traced)  # what a compiled forward folded never reaches the next one
    model.register_forward_hook(hooks.drop_traced)


def _base_layer(module: nn.Module) -> nn.Module:
    get_base = getattr(module, "get_base_layer", None)
    return get_base() if get_base is not None else module


def ether_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter parameters (all named adapters of every processor)."""
    state = get_state(model)
    return [p for proc in state.processors.values() for p in proc.parameters()]


def remove_ether(model: nn.Module) -> nn.Module:
    """Take the adapter off: unmerge if merged, restore the processors (with the attention options set since) and
    the ``requires_grad`` flags, and every hook ``apply_ether`` installed."""
    state = get_state(model)
    if state.merged:
        unmerge_ether(model)
    for name, attn in state.attentions.items():
        proc, original = state.processors[name], state.original_processors[name]
        stock = proc.stock()
        same = type(stock) is type(original) and getattr(stock, "slice_size", None) == getattr(
            original, "slice_size", None)
        hooks.install(attn, original if same else stock)
        attn.__dict__.pop("set_processor", None)
    for method in hooks.GUARDED_MODEL_METHODS:
        model.__dict__.pop(method, None)
    for registry, hook in ((model._forward_pre_hooks, hooks.on_forward),
                           (model._forward_pre_hooks, hooks.drop_traced), (model._forward_hooks, hooks.drop_traced),
                           (model._load_state_dict_post_hooks, hooks.drop_missing_adapter_keys)):
        for k in [k for k, h in registry.items() if h is hook]:
            del registry[k]
            model._forward_pre_hooks_with_kwargs.pop(k, None)
    for n, p in model.named_parameters():
        p.requires_grad_(state.requires_grad.get(n, p.requires_grad))
    delattr(model, STATE_ATTR)
    return model


# ------------------------------------------------------------------ merge / unmerge
def _weights(module: nn.Module, layer: str) -> dict[str, nn.Parameter]:
    """The tensors ``merge_ether`` folds into, by name: "weight" (the base ``W``) and, for a PEFT LoRA layer,
    "lora_A.<adapter>" / "lora_B.<adapter>". Raises for anything it cannot fold into exactly."""
    base, factors = module, {}
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; without it there are no LoRA layers to fold into
        LoraLayer = ()
    if isinstance(module, LoraLayer):
        base = module.get_base_layer()
        variants = [n for n, on in getattr(module, "use_dora", {}).items() if on] + list(
            getattr(module, "lora_variant", {}))
        if variants:
            raise EtherError(f"merge_ether cannot fold into {layer}: LoRA variant (e.g. DoRA) adapters "
                             f"{sorted(set(variants))} do not commute with the reflection")
        for name in module.lora_A:
            factors[f"lora_A.{name}"] = module.lora_A[name].weight
            factors[f"lora_B.{name}"] = module.lora_B[name].weight
    if type(base) is not nn.Linear:
        raise EtherError(f"merge_ether cannot fold into {layer}: it is a {type(module).__name__}; only nn.Linear "
                         "and PEFT LoRA projections are merged")
    tensors = {"weight": base.weight, **factors}
    if any(t.device.type == "meta" for t in tensors.values()):
        raise EtherError(f"merge_ether needs every weight in memory, but {layer} is offloaded (meta); merge before "
                         "enable_sequential_cpu_offload / accelerate.cpu_offload")
    return tensors


def _merged(name: str, t: torch.Tensor, method: str, p_in, p_out) -> torch.Tensor:
    # the base weight gets both maps, a LoRA's A (r, d) the input map (A H), its B (f, r) the output map (H̃ B)
    if name == "weight":
        return Fn.fold_weight(t, method, p_in, p_out)
    if name.startswith("lora_A."):
        return Fn.fold_weight(t, method, p_in)
    return t if p_out is None else Fn.fold_weight(t, method, None, p_out)


@torch.no_grad()
def merge_ether(model: nn.Module) -> nn.Module:
    """Fold the active adapter into the projection weights (and into the factors of a LoRA on the same
    projections) and install diffusers' stock processors: the merged model runs at the base model's speed.

    The original tensors are kept on the CPU, so ``unmerge_ether`` restores them bit for bit in any dtype.
    """
    state = get_state(model)
    if state.merged:
        raise EtherError("the ETHER adapter is already merged")
    method = state.config.method
    plan = [(f"{attn_name}.{p}", proc, p, _weights(get_projection(state.attentions[attn_name], p), f"{attn_name}.{p}"))
            for attn_name, proc in state.processors.items() for p in proc.shapes]  # validated before any change
    for layer, proc, p, tensors in plan:
        p_in, p_out = proc.adapter(p).params()
        state.saved_weights[layer] = {n: t.detach().to("cpu", copy=True) for n, t in tensors.items()}
        for n, t in tensors.items():
            t.copy_(_merged(n, t, method, p_in, p_out))
    for name, attn in state.attentions.items():
        hooks.install(attn, state.processors[name].stock())
    state.merged = True
    return model


@torch.no_grad()
def unmerge_ether(model: nn.Module) -> nn.Module:
    """Give back the original weights (and LoRA factors) exactly and reinstall the ETHER processors, keeping the
    attention options set while merged (slicing, xformers)."""
    state = get_state(model)
    if not state.merged:
        raise EtherError("the ETHER adapter is not merged")
    plan = []
    for attn_name, proc in state.processors.items():
        attn = state.attentions[attn_name]
        try:
            stock_options(attn.processor)
        except EtherError:
            raise EtherError(f"{attn_name} now uses {type(attn.processor).__name__}, which the ETHER processor "
                             "would replace; unload it (e.g. unload_ip_adapter) before unmerge_ether") from None
        for p in proc.shapes:
            layer = f"{attn_name}.{p}"
            tensors, saved = _weights(get_projection(attn, p), layer), state.saved_weights[layer]
            added = sorted(n.split(".", 1)[1] for n in set(tensors) - set(saved))
            if added:
                raise EtherError(f"LoRA adapters {added} were added to {layer} while the ETHER adapter was merged; "
                                 "unmerging would change what they compute: remove them before unmerge_ether")
            plan.append((layer, tensors))
    for layer, tensors in plan:
        saved = state.saved_weights.pop(layer)
        for n, t in tensors.items():
            t.copy_(saved[n])
    for name, attn in state.attentions.items():
        proc = state.processors[name]
        proc.adopt(attn.processor)
        proc.to(next(attn.parameters()).device)
        hooks.install(attn, proc)
    state.merged = False
    return model


# ------------------------------------------------------------------ adapter values, by name
def adapter_state_dict(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """'<attn>.<projection>.<in|out>.<param>' -> tensor, for one named adapter (the active one by default)."""
    state = get_state(model)
    check_loaded(model, adapter_name)
    out: dict[str, torch.Tensor] = {}
    for attn_name, proc in state.processors.items():
        for p in proc.shapes:
            p_in, p_out = proc.adapter(p, adapter_name).params()
            for side, params in (("in", p_in), ("out", p_out)):
                for k, t in (params or {}).items():
                    out[f"{attn_name}.{p}.{side}.{k}"] = t.detach()
    return out


def load_adapter_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy '<attn>.<projection>.<in|out>.<param>' -> tensor (``adapter_state_dict``'s keys) into the active adapter,
    each in its parameter's dtype."""
    state = get_state(model)
    with torch.no_grad():
        for key, t in tensors.items():
            layer, side, name = key.rsplit(".", 2)
            attn_name, p = split_layer_name(layer)
            target = state.processors[attn_name].adapter(p).side(side)[name]
            target.copy_(t.to(target.dtype))


def prepare_adapter(model: nn.Module, config: EtherConfig, adapter_name: str | None = None) -> EtherState:
    """Make the adapter ``adapter_name`` active, ready for its values: applies ETHER with ``config`` if the model has
    none (its one adapter then takes the name), adds the named adapter beside those loaded if it is new. Without a
    name: the active adapter. The caller has checked that ``config`` fits (``io.load_ether``)."""
    if adapter_name is not None:
        check_adapter_name(adapter_name)
    state = get_state(model, required=False)
    if state is None:
        apply_ether(model, config)
        state = get_state(model)
        if adapter_name is not None and adapter_name != DEFAULT_ADAPTER:
            for proc in state.processors.values():
                proc.adapters[adapter_name] = proc.adapters.pop(DEFAULT_ADAPTER)
                proc.active = adapter_name
    elif adapter_name is not None:
        for proc in state.processors.values():
            if adapter_name not in proc.adapters:
                device = next(proc.parameters()).device
                proc.add_adapter(adapter_name)
                proc.adapters[adapter_name].to(device)
            proc.active = adapter_name
    return state


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters loaded in ``model``."""
    procs = list(get_state(model).processors.values())
    return list(procs[0].adapters) if procs else []


def check_loaded(model: nn.Module, adapter_name: str | None) -> None:
    """Raise ``UnknownAdapterError`` (one line) unless ``adapter_name`` is None or a loaded adapter."""
    if adapter_name is not None and adapter_name not in (loaded := adapter_names(model)):
        raise UnknownAdapterError(f"adapter {adapter_name!r} is not loaded; loaded: {loaded}")


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Use the named adapter for every sample (merge_ether folds the active one)."""
    if get_state(model).merged:
        raise RuntimeError("unmerge_ether(model) before switching adapters: the merged weights hold the active one")
    check_loaded(model, name)
    for proc in get_state(model).processors.values():
        proc.active = name


# ------------------------------------------------------------------ how the processors compute
def set_mixed_form(model: nn.Module, form: str) -> None:
    """How mixed-adapter batches run at inference: "fold" (default) or "act" (``layer``'s module docstring)."""
    if form not in MIXED_FORMS:
        raise ValueError(f"mixed form {form!r} is unknown; choose one of {MIXED_FORMS}")
    for proc in get_state(model).processors.values():
        proc.mixed_form = form


def set_impl(model: nn.Module, impl: str) -> None:
    """Compute every adapted projection of ``model`` in form ``impl``, one of ``layer.IMPLS`` (the default is "auto";
    "torch" forces the plain PyTorch path)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown; choose one of {IMPLS}")
    for proc in get_state(model).processors.values():
        proc.impl = impl
