"""Tiny models and inputs shared by the core tests."""

import torch

from ether_diffusion import functional as Fn
from ether_diffusion.models.unet_configs import TINY_UNET, build_unet

IDENTITY_METHODS = ("ether_plus", "oft", "naive")  # identity at init; `ether` is a reflection from step 0


def tiny_unet(seed=0, **overrides):
    return build_unet(dict(TINY_UNET, **overrides), seed=seed).eval()


def unet_inputs(batch=2, seed=0, cross_dim=32, size=16):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(batch, 4, size, size, generator=g), timestep=torch.tensor(10),
                encoder_hidden_states=torch.randn(batch, 7, cross_dim, generator=g))


@torch.no_grad()
def perturb(params, seed=0, scale=0.2):
    """Move every adapter parameter away from its initial value (so identity methods are no longer the identity)."""
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.add_(torch.randn(p.shape, generator=g).to(p) * scale)


__all__ = ["Fn", "IDENTITY_METHODS", "tiny_unet", "unet_inputs", "perturb"]
