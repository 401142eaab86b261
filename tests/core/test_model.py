"""apply / merge / unmerge / remove on whole UNets and ControlNets; parameter counts on the real SD configs."""

import pytest
import torch
from diffusers import ControlNetModel
from diffusers.models.attention_processor import AttnProcessor2_0

import ether_diffusion as ed
from ether_diffusion.models.unet_configs import SD15_UNET, SD21_UNET, TINY_UNET, build_unet
from ether_diffusion.layer import EtherAttnProcessor

from .helpers import IDENTITY_METHODS, perturb, tiny_unet, unet_inputs

ALL = ("ether",) + IDENTITY_METHODS


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs).sample


@pytest.mark.parametrize("method,n_blocks,expected", [("ether", 4, 99_456), ("ether_plus", 4, 398_592),
                                                      ("ether", 1, 99_456), ("ether_plus", 16, 398_592)])
def test_sd15_trainable_parameter_counts(method, n_blocks, expected):
    unet = build_unet(SD15_UNET, device="meta")
    ed.apply_ether(unet, ed.EtherConfig(method=method, n_blocks=n_blocks))
    assert sum(p.numel() for p in ed.ether_parameters(unet)) == expected
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == expected


def test_sd21_config_applies():
    unet = build_unet(SD21_UNET, device="meta")
    ed.apply_ether(unet, ed.EtherConfig(method="ether", n_blocks=4))
    procs = [p for p in unet.attn_processors.values() if isinstance(p, EtherAttnProcessor)]
    assert len(procs) == 32  # 16 transformer blocks x (self, cross)
    # k/v of cross-attention read the 1024-d OpenCLIP text states
    assert procs[1].shapes["to_k"] == (320, 1024)


@pytest.mark.parametrize("method", IDENTITY_METHODS)
def test_identity_methods_leave_the_unet_unchanged_at_init(method):
    unet, x = tiny_unet(), unet_inputs()
    before = run(unet, x)
    ed.apply_ether(unet, ed.EtherConfig(method=method, n_blocks=4))
    torch.testing.assert_close(run(unet, x), before, atol=1e-5, rtol=1e-5)


def test_only_adapter_parameters_train_and_base_is_untouched():
    unet, x = tiny_unet(), unet_inputs()
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    ed.apply_ether(unet, ed.EtherConfig(method="ether_plus", n_blocks=4))
    params = ed.ether_parameters(unet)
    assert {id(p) for p in unet.parameters() if p.requires_grad} == {id(p) for p in params}
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    unet(**x).sample.square().mean().backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
    after = unet.state_dict()
    for k, v in base.items():
        assert torch.equal(after[k], v), k


def test_target_modules_by_name_and_errors():
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig(method="ether", n_blocks=4, target_modules=("attn2.to_k", "attn2.to_v")))
    layers = ed.state.get_state(unet).layers
    assert layers and all(k.endswith(("attn2.to_k", "attn2.to_v")) for k in layers)
    with pytest.raises(ed.EtherError, match="already has"):
        ed.apply_ether(unet, ed.EtherConfig())
    with pytest.raises(ValueError, match=r"n_blocks=5 does not divide in_features=32 of .*attn1\.to_q"):
        ed.apply_ether(tiny_unet(), ed.EtherConfig(n_blocks=5))
    with pytest.raises(ed.ConfigError, match="does not end in one of"):
        ed.EtherConfig(target_modules=("proj_in",))
    with pytest.raises(ed.ConfigError, match="unknown"):
        ed.EtherConfig(method="lora")


@pytest.mark.parametrize("method", ALL)
def test_merge_equals_unmerged_and_unmerge_restores(method):
    unet, x = tiny_unet(), unet_inputs()
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    ed.apply_ether(unet, ed.EtherConfig(method=method, n_blocks=4))
    perturb(ed.ether_parameters(unet), seed=1)
    unmerged = run(unet, x)
    ed.merge_ether(unet)
    assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())
    torch.testing.assert_close(run(unet, x), unmerged, atol=1e-4, rtol=1e-4)
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, weights[k])]
    assert changed and all(".to_" in k and k.endswith("weight") for k in changed)
    ed.unmerge_ether(unet)
    assert any(isinstance(p, EtherAttnProcessor) for p in unet.attn_processors.values())
    for k, v in unet.state_dict().items():
        if "processor" in k:
            continue
        if method == "ether":  # W H H = W up to float rounding
            torch.testing.assert_close(v, weights[k], atol=1e-6, rtol=1e-6)
        else:  # kept copy: bit for bit
            assert torch.equal(v, weights[k]), k
    torch.testing.assert_close(run(unet, x), unmerged, atol=1e-5, rtol=1e-5)
    ed.remove_ether(unet)
    assert not hasattr(unet, "_ether")
    assert all(p.requires_grad for p in unet.parameters())


def test_merge_state_errors():
    unet = tiny_unet()
    with pytest.raises(ed.EtherError, match="no ETHER adapter"):
        ed.merge_ether(unet)
    ed.apply_ether(unet, ed.EtherConfig("ether", 4))
    with pytest.raises(ed.EtherError, match="not merged"):
        ed.unmerge_ether(unet)
    ed.merge_ether(unet)
    with pytest.raises(ed.EtherError, match="already merged"):
        ed.merge_ether(unet)
    ed.remove_ether(unet)  # removing a merged adapter unmerges it first
    assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())


def test_controlnet():
    torch.manual_seed(0)
    cn = ControlNetModel(**{k: v for k, v in TINY_UNET.items() if k not in ("up_block_types", "out_channels",
                                                                             "sample_size")},
                         conditioning_embedding_out_channels=(16, 32)).eval()
    x = unet_inputs(size=16)
    cond = torch.randn(2, 3, 32, 32)  # one stride-2 step of the hint encoder -> 16x16
    with torch.no_grad():
        base = cn(**x, controlnet_cond=cond).mid_block_res_sample
    ed.apply_ether(cn, ed.EtherConfig(method="oft", n_blocks=2))
    assert len(ed.ether_parameters(cn)) > 0
    with torch.no_grad():
        same = cn(**x, controlnet_cond=cond).mid_block_res_sample
    torch.testing.assert_close(same, base, atol=1e-5, rtol=1e-5)
