"""Errors and checkpoints around an adapted model: one-line refusals that write nothing, the reserved name "none",
strict base checkpoints, and save_pretrained that never writes a model that loads back without its adapter."""

import pytest
import torch
from diffusers import UNet2DConditionModel

import ether_diffusion as ed
from tests.core.helpers import perturb, tiny_unet, unet_inputs

from .helpers import run


def adapted():
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    return unet


def test_save_ether_of_an_unknown_adapter_writes_nothing(tmp_path):
    unet = adapted()
    with pytest.raises(KeyError) as err:
        ed.save_ether(unet, tmp_path / "out", adapter_name="zzz")
    assert str(err.value) == "adapter 'zzz' is not loaded; loaded: ['default']"
    assert not (tmp_path / "out").exists()


def test_none_is_reserved(tmp_path):
    unet = adapted()
    path = ed.save_ether(unet, tmp_path / "a")
    with pytest.raises(ed.EtherError, match="'none' stands for the base model"):
        ed.load_ether(tiny_unet(), path, adapter_name="none")
    with pytest.raises(ed.EtherError, match="'none' stands for the base model"):
        ed.load_ether(unet, path, adapter_name="none")
    assert ed.adapter_names(unet) == ["default"]


def test_strict_load_of_a_base_checkpoint_into_an_adapted_model():
    unet, other = adapted(), tiny_unet(seed=3)
    adapter = [p.detach().clone() for p in ed.ether_parameters(unet)]
    unet.load_state_dict(other.state_dict(), strict=True)  # base keys only
    state = unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())
    assert all(torch.equal(p, v) for p, v in zip(ed.ether_parameters(unet), adapter))  # adapter kept
    with pytest.raises(RuntimeError, match="Missing key"):  # a base key missing is still an error
        unet.load_state_dict({k: v for k, v in other.state_dict().items() if k != "conv_in.weight"})


def test_save_pretrained_refuses_unmerged_and_saves_merged(tmp_path):
    unet, x = adapted(), unet_inputs()
    want = run(unet, x)
    with pytest.raises(ed.EtherError, match="merge_ether"):
        unet.save_pretrained(tmp_path / "unmerged")
    assert not (tmp_path / "unmerged").exists()
    ed.merge_ether(unet)
    unet.save_pretrained(tmp_path / "merged")
    back = UNet2DConditionModel.from_pretrained(tmp_path / "merged")  # plain diffusers, no ether-diffusion
    torch.testing.assert_close(run(back, x), want, atol=2e-5, rtol=2e-5)
