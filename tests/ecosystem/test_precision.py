"""Merge round trips restore the weights bit for bit in every dtype; adapter parameters stay float32 through a model
cast, and a cast after apply_ether trains exactly as a cast before it."""

import copy

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import functional as Fn
from tests.core.helpers import perturb, tiny_unet, unet_inputs

from .helpers import add_lora


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", Fn.METHODS)
def test_merge_round_trips_restore_weights_bit_for_bit(method, dtype):
    unet = add_lora(tiny_unet()).to(dtype)
    before = copy.deepcopy(unet.state_dict())
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1, scale=0.5)
    for _ in range(3):
        ed.merge_ether(unet)
        merged = {k: v.clone() for k, v in unet.state_dict().items() if k in before}
        ed.unmerge_ether(unet)
    assert any(not torch.equal(merged[k], v) for k, v in before.items())  # merging did change the weights
    ed.merge_ether(unet)
    ed.remove_ether(unet)  # removing a merged adapter unmerges it
    after = unet.state_dict()
    assert set(after) == set(before)
    assert [k for k, v in before.items() if not torch.equal(after[k], v)] == []


@pytest.mark.parametrize("cast", ["to", "half", "bfloat16"])
def test_adapter_parameters_stay_float32(cast):
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
    values = [p.detach().clone() for p in ed.ether_parameters(unet)]
    {"to": lambda: unet.to(torch.float16), "half": unet.half, "bfloat16": unet.bfloat16}[cast]()
    assert next(unet.conv_in.parameters()).dtype != torch.float32  # the model itself was cast
    assert all(p.dtype == torch.float32 for p in ed.ether_parameters(unet))
    assert all(torch.equal(p, v) for p, v in zip(ed.ether_parameters(unet), values))  # values untouched
    unet.double()  # a cast up is followed
    assert all(p.dtype == torch.float64 for p in ed.ether_parameters(unet))


def test_cast_after_apply_trains_like_cast_before():
    x = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in unet_inputs().items()}
    grads = []
    for order in ("before", "after"):
        unet = tiny_unet()
        if order == "before":
            unet.to(torch.bfloat16)
        ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
        perturb(ed.ether_parameters(unet), seed=1)
        if order == "after":
            unet.to(torch.bfloat16)
        unet(**x).sample.float().square().mean().backward()
        grads.append([p.grad for p in ed.ether_parameters(unet)])
    assert all(g.dtype == torch.float32 for g in grads[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
