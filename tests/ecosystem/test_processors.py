"""diffusers' processor switches on an adapted model: the adapter keeps acting, or the call is refused in one line;
the model never reports ETHER applied while no ETHER processor runs."""

import pytest
import torch
from diffusers.models.attention_processor import (AttnProcessor, AttnProcessor2_0, IPAdapterAttnProcessor2_0,
                                                  SlicedAttnProcessor, XFormersAttnProcessor)

import ether_diffusion as ed
from ether_diffusion.layer import EtherAttnProcessor
from tests.core.helpers import perturb, tiny_unet, unet_inputs

from .helpers import run


def adapted(method="ether_plus"):
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    return unet


def ether_processors(unet):
    return [p for p in unet.attn_processors.values() if isinstance(p, EtherAttnProcessor)]


@pytest.mark.parametrize("size", [1, 3, "max", "auto"])
def test_attention_slicing_keeps_the_adapter(size):
    unet, x = adapted(), unet_inputs()
    want, base = run(unet, x), run(tiny_unet(), x)
    unet.set_attention_slice(size)  # what pipe.enable_attention_slicing() calls
    procs = ether_processors(unet)
    assert len(procs) == len(unet.attn_processors) and all(p.slice_size is not None for p in procs)
    got = run(unet, x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(got, base, atol=1e-3)
    unet.set_attention_slice(None)  # disable_attention_slicing()
    assert all(p.slice_size is None for p in ether_processors(unet))
    torch.testing.assert_close(run(unet, x), want, atol=1e-6, rtol=1e-6)


def test_sliced_attention_equals_diffusers_sliced_processor_on_merged_weights():
    unet, x = adapted(), unet_inputs()
    unet.set_attention_slice(2)
    got = run(unet, x)
    ed.merge_ether(unet)  # stock processors on the merged weights, slicing kept
    assert all(type(p) is SlicedAttnProcessor and p.slice_size == 2 for p in unet.attn_processors.values())
    torch.testing.assert_close(run(unet, x), got, atol=2e-5, rtol=2e-5)


def test_stock_and_xformers_processors_set_options_not_replace():
    unet = adapted()
    unet.set_attn_processor(AttnProcessor())
    assert len(ether_processors(unet)) == len(unet.attn_processors)
    unet.set_attn_processor(XFormersAttnProcessor())  # what enable_xformers_memory_efficient_attention installs
    assert all(p.attention == "xformers" for p in ether_processors(unet))
    unet.set_attn_processor(AttnProcessor2_0())  # disable_xformers_memory_efficient_attention
    assert all(p.attention == "sdpa" for p in ether_processors(unet))


def test_other_processors_are_refused():
    unet, x = adapted(), unet_inputs()
    want = run(unet, x)
    ip = IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=32)
    for call in (lambda: unet.set_attn_processor(ip), unet.fuse_qkv_projections, unet.set_default_attn_processor):
        with pytest.raises(ed.EtherError) as err:
            call()
        assert "\n" not in str(err.value)
    assert not any(hasattr(m, "to_qkv") for m in unet.modules())  # refused before anything changed
    torch.testing.assert_close(run(unet, x), want)


def test_processor_replaced_behind_the_guard_refuses_the_forward():
    unet, x = adapted(), unet_inputs()
    attn = next(m for n, m in unet.named_modules() if n.endswith("attn2"))
    attn.processor = IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=32)  # bypasses set_processor
    with pytest.raises(ed.EtherError, match="was replaced by IPAdapterAttnProcessor2_0"):
        run(unet, x)


def test_apply_ether_on_ip_adapter_processors_is_refused():
    unet = tiny_unet()
    procs = {name: (IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=32) if "attn2" in name
                    else AttnProcessor2_0()) for name in unet.attn_processors}
    unet.set_attn_processor(procs)
    with pytest.raises(ed.EtherError, match="IPAdapterAttnProcessor2_0"):
        ed.apply_ether(unet, ed.EtherConfig("ether", 4))
    assert ed.state.get_state(unet, required=False) is None
    assert sum(isinstance(p, IPAdapterAttnProcessor2_0) for p in unet.attn_processors.values()) > 0


def test_merged_model_takes_any_processor_and_unmerge_checks():
    unet, x = adapted(), unet_inputs()
    want = run(unet, x)
    ed.merge_ether(unet)
    unet.set_attention_slice(1)  # stock switches while merged
    ed.unmerge_ether(unet)
    assert all(p.slice_size == 1 for p in ether_processors(unet))
    torch.testing.assert_close(run(unet, x), want, atol=1e-6, rtol=1e-6)
    ed.merge_ether(unet)
    unet.set_attn_processor({n: (IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=32)
                                 if "attn2" in n else AttnProcessor2_0()) for n in unet.attn_processors})
    with pytest.raises(ed.EtherError, match="unload it"):
        ed.unmerge_ether(unet)
    assert ed.state.get_state(unet).merged


def test_remove_ether_restores_processors_and_drops_every_guard():
    unet = adapted()
    unet.set_attention_slice(2)
    ed.remove_ether(unet)
    assert all(type(p) is SlicedAttnProcessor for p in unet.attn_processors.values())
    assert not any("set_processor" in m.__dict__ for m in unet.modules())
    assert not {"save_pretrained", "fuse_qkv_projections"} & set(unet.__dict__)
    assert not unet._forward_pre_hooks and not unet._load_state_dict_post_hooks
    unet.set_attn_processor(AttnProcessor2_0())  # plain diffusers again
    assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())
