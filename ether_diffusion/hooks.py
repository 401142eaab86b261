"""What diffusers and torch call on a model prepared by ``apply_ether``, intercepted so that the adapter is never
switched off silently.

- ``on_forward`` (forward pre-hook): refuses a forward whose ETHER processors were replaced, counts forwards (the step
  fold's folded weights live for one), and reads ``cross_attention_kwargs["ether_adapters"]`` in diffusers' batch order.
- ``drop_traced`` (forward pre-hook and hook, where the step fold runs): what a compiled forward folded never reaches
  the next one.
- ``set_processor`` on each adapted ``Attention``: the stock processors that diffusers' switches install
  (``set_attention_slice``, xformers on and off) set the ETHER processor's options instead;
  any other processor (IP-Adapter, fused projections, a custom one) is refused.
- ``fuse_qkv_projections``, ``set_default_attn_processor`` and ``save_pretrained`` on the model: refused while the
  adapter is unmerged.
- a ``load_state_dict`` post-hook: a base checkpoint (without adapter keys) loads with ``strict=True``.
"""

from __future__ import annotations

import torch

from .assignment import Assignment, resolve_names
from .layer import EtherAttnProcessor
from .state import STATE_ATTR, EtherError


def on_forward(model, args, kwargs):
    """Forward pre-hook (``with_kwargs``) of a prepared model."""
    if torch.compiler.is_compiling():  # nothing of this belongs in a compiled graph
        return None
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        return None
    extra = kwargs.get("cross_attention_kwargs") or {}
    if state.merged:
        if extra.get("ether_adapters") is not None:
            raise EtherError("ether_adapters needs the unmerged model (the merged weights hold one adapter); "
                             "unmerge_ether(model) first")
        return None
    for name, attn in state.attentions.items():
        if attn._modules.get("processor") is not state.processors[name]:
            raise EtherError(f"the ETHER processor of {name} was replaced by {type(attn.processor).__name__}, "
                             "which would run without the adapter; remove_ether(model) to take the adapter off, "
                             "or merge_ether(model) before changing processors")
    state.forwards.count += 1
    names = extra.get("ether_adapters")
    if names is None or isinstance(names, Assignment):
        return None
    sample = args[0] if args else kwargs["sample"]
    resolved = resolve_names(names, sample, extra.get("ether_images_per_prompt"))
    extra = {k: v for k, v in extra.items() if k != "ether_images_per_prompt"}
    return args, {**kwargs, "cross_attention_kwargs": {**extra, "ether_adapters": resolved}}


def drop_traced(model, *args) -> None:
    """Forward pre-hook and hook of a model whose processors share a step fold (``model.apply_ether``)."""
    state = getattr(model, STATE_ATTR, None)
    if state is not None and state.step_fold is not None:
        state.step_fold.drop_traced()


def set_processor(attn, processor) -> None:
    """``Attention.set_processor`` of an adapted attention layer (bound to it by ``apply_ether``)."""
    current = attn._modules.get("processor")
    if isinstance(current, EtherAttnProcessor) and processor is not current:
        current.adopt(processor)  # raises for a processor that would switch the adapter off
        return
    install(attn, processor)


def install(attn, processor) -> None:
    """The class's own ``set_processor``, past the guard above (apply / merge / unmerge / remove use it)."""
    type(attn).set_processor(attn, processor)


class RefusedWhileUnmerged:
    """A model method (bound to the model by ``apply_ether``) that raises ``why`` while the adapter is unmerged and
    runs the class's own method otherwise."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why

    def __call__(self, model, *args, **kwargs):
        state = getattr(model, STATE_ATTR, None)
        if state is not None and not state.merged:
            raise EtherError(self.why)
        return getattr(type(model), self.name)(model, *args, **kwargs)


GUARDED_MODEL_METHODS = {guard.name: guard for guard in (
    RefusedWhileUnmerged("fuse_qkv_projections",
                         "fuse_qkv_projections would run q, k, v on fused base weights without the ETHER adapter; "
                         "ETHER's CUDA path already runs them as one GEMM. merge_ether(model) first to fuse the "
                         "merged weights"),
    RefusedWhileUnmerged("set_default_attn_processor",
                         "set_default_attn_processor would replace the ETHER processors, which already run PyTorch's "
                         "default attention (model.set_attention_slice(None) turns slicing off); remove_ether(model) "
                         "to take the adapter off"),
    # the file would hold the base weights and load back without the adapter; merged, it holds the adapter
    RefusedWhileUnmerged("save_pretrained",
                         "save_pretrained would write the base weights without the unmerged ETHER adapter; "
                         "merge_ether(model) first to save a merged model, or save_ether(model, path) to save the "
                         "adapter"),
)}


def drop_missing_adapter_keys(model, incompatible) -> None:
    """``load_state_dict`` post-hook: adapter parameters absent from a (base) checkpoint are not missing."""
    state = getattr(model, STATE_ATTR, None)
    if state is None or state.merged:
        return
    names = tuple(f"{name}.processor." for name in state.processors)
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not any(k.startswith(n) or f".{n}" in k for n in names)]

