"""Tiny models, a PEFT LoRA and a dense reference for the tests of ETHER beside other diffusers features."""

import torch
from peft import LoraConfig

from ether_diffusion import functional as Fn
from ether_diffusion.state import get_state
from ether_diffusion.projection import get_projection

PROJ = ["to_q", "to_k", "to_v", "to_out.0"]


def run(model, inputs, **kw):
    with torch.no_grad():
        return model(**inputs, **kw).sample


def add_lora(unet, seed=0, rank=4, alpha=8):
    """A PEFT LoRA on the attention projections (what ``pipe.load_lora_weights`` installs), with a non-zero B."""
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=PROJ))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return unet


def lora_factors(module):
    """(B A scaled, ...) of a PEFT LoRA layer: the dense delta s B A (f, d) of its active adapters, or zero."""
    delta = torch.zeros(module.out_features, module.in_features, dtype=torch.float64)
    for name in getattr(module, "lora_A", {}):
        delta += module.scaling[name] * (module.lora_B[name].weight.double() @ module.lora_A[name].weight.double())
    return delta


def dense_reference(unet, plain, lora_scale=1.0):
    """Write into ``plain`` (a bare copy of the base UNet) each adapted projection's dense weight
    ``H̃ (W + s B A) H`` in float64 -> float32, from ``unet``'s ETHER parameters and LoRA factors: the formula,
    computed with dense matrices and no code path of the processor."""
    state = get_state(unet)
    with torch.no_grad():
        for attn_name, proc in state.processors.items():
            for p in proc.shapes:
                module = get_projection(unet.get_submodule(attn_name), p)
                base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
                W = base.weight.double() + lora_scale * lora_factors(module)
                p_in, p_out = proc.adapter(p).params()
                W = W @ Fn.dense_matrix(proc.method, {k: v.double() for k, v in p_in.items()})
                if p_out is not None:
                    W = Fn.dense_matrix(proc.method, {k: v.double() for k, v in p_out.items()}) @ W
                get_projection(plain.get_submodule(attn_name), p).weight.copy_(W.float())
    return plain
