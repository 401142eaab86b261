"""The attention processor against diffusers' stock AttnProcessor2_0 and the dense formula."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from ether_diffusion import functional as Fn
from ether_diffusion.layer import EtherAttnProcessor
from ether_diffusion.projection import get_projection

from .helpers import IDENTITY_METHODS, perturb

PROJ = ("to_q", "to_k", "to_v", "to_out.0")


def make_attn(cross_dim=None, seed=0):
    torch.manual_seed(seed)
    return Attention(query_dim=32, cross_attention_dim=cross_dim, heads=4, dim_head=8, bias=True).eval()


def shapes(attn):
    return {p: (get_projection(attn, p).out_features, get_projection(attn, p).in_features) for p in PROJ}


def inputs(cross_dim, mask, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 10, 32, generator=g)
    enc = torch.randn(2, 6, cross_dim, generator=g) if cross_dim else None
    n_keys = 6 if cross_dim else 10
    attn_mask = None
    if mask:
        keep = torch.ones(2, n_keys)
        keep[0, -2:] = 0
        attn_mask = (1 - keep) * -10000.0  # additive mask, as diffusers' pipelines pass it
    return x, enc, attn_mask


@pytest.mark.parametrize("method", IDENTITY_METHODS)
@pytest.mark.parametrize("cross_dim", [None, 24])
@pytest.mark.parametrize("mask", [False, True])
def test_identity_at_init_equals_stock_processor(method, cross_dim, mask):
    attn = make_attn(cross_dim)
    x, enc, attn_mask = inputs(cross_dim, mask)
    with torch.no_grad():
        expected = attn(x, encoder_hidden_states=enc, attention_mask=attn_mask)
        attn.set_processor(EtherAttnProcessor(method, 4, shapes(attn)))
        got = attn(x, encoder_hidden_states=enc, attention_mask=attn_mask)
    assert isinstance(attn.processor, EtherAttnProcessor)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ("ether",) + IDENTITY_METHODS)
@pytest.mark.parametrize("cross_dim", [None, 24])
@pytest.mark.parametrize("n_blocks", [1, 2, 8])
def test_processor_equals_stock_processor_on_dense_weights(method, cross_dim, n_blocks):
    """The fast activation path in the processor == the stock processor run on W' = H̃ W H formed densely."""
    attn = make_attn(cross_dim)
    proc = EtherAttnProcessor(method, n_blocks, shapes(attn))
    perturb(proc.parameters(), seed=3)
    x, enc, mask = inputs(cross_dim, mask=True)
    with torch.no_grad():
        attn.set_processor(proc)
        got = attn(x, encoder_hidden_states=enc, attention_mask=mask)
        for p in PROJ:
            lin = get_projection(attn, p)
            p_in, p_out = proc.adapter(p).params()
            W = lin.weight.double() @ Fn.dense_matrix(method, {k: v.double() for k, v in p_in.items()})
            if p_out is not None:
                W = Fn.dense_matrix(method, {k: v.double() for k, v in p_out.items()}) @ W
            lin.weight.copy_(W.float())
        attn.set_processor(AttnProcessor2_0())
        expected = attn(x, encoder_hidden_states=enc, attention_mask=mask)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)


def test_processor_owns_parameters_and_they_get_gradients():
    attn = make_attn(24)
    attn.requires_grad_(False)
    proc = EtherAttnProcessor("ether", 4, shapes(attn))
    attn.set_processor(proc)
    names = {n for n, _ in attn.named_parameters()}
    assert "processor.adapters.default.out.in_u" in names
    x, enc, _ = inputs(24, False)
    attn(x, encoder_hidden_states=enc).square().mean().backward()
    grads = [p.grad for p in proc.parameters()]
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert attn.to_q.weight.grad is None


def test_4d_input_and_group_norm_like_the_stock_processor():
    """Conv-style (B, C, H, W) inputs with residual connections, as in the VAE's mid-block attention."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True,
                     rescale_output_factor=2.0, bias=True).eval()
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        expected = attn(x)
        attn.set_processor(EtherAttnProcessor("oft", 2, shapes(attn)))
        got = attn(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_adapter_lookup_follows_renames_and_replacements():
    """``adapter()`` caches its lookups; a renamed, replaced or removed adapter group is never served stale."""
    attn = make_attn(24)
    proc = EtherAttnProcessor("ether", 4, shapes(attn))
    first = proc.adapter("to_q")
    assert first is proc.adapters["default"]["q"] and proc.adapter("to_q") is first
    proc.adapters["subject"] = proc.adapters.pop("default")  # what io.load does when it names an adapter
    proc.active = "subject"
    assert proc.adapter("to_q") is first
    with pytest.raises(KeyError):
        proc.adapter("to_q", "default")
    proc.add_adapter("default")  # the same name again: a new group
    fresh = proc.adapter("to_q", "default")
    assert fresh is proc.adapters["default"]["q"] and fresh is not first
    proc.adapters["subject"] = proc.adapters["default"]  # a name rebound to another group
    assert proc.adapter("to_q") is fresh


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_torch_compile_traces_a_training_step_once(method):
    """Compiled training steps reuse one graph (no processor state filled during the first step that the next
    would have to guard on: that recompiled the whole UNet), and the compiled step computes the eager one."""
    import ether_diffusion as ed
    from ether_diffusion.models.unet_configs import TINY_UNET, build_unet

    torch._dynamo.reset()
    unet = build_unet(TINY_UNET, seed=0)
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet))
    graphs = []

    def backend(gm, example_inputs):  # counts what dynamo traces, runs it as traced (no code generation)
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(unet, backend=backend)
    gen = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 7, 32, generator=gen)
    for _ in range(3):
        y = compiled(x, 10, text).sample
        y.square().mean().backward()
    assert len(graphs) == 1
    torch.testing.assert_close(y, unet(x, 10, text).sample, rtol=1e-5, atol=1e-5)
