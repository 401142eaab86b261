"""ETHER and a PEFT / diffusers LoRA on the same projections: y = H̃ (W + s B A) H x + b, in either order."""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion.models.tiny import tiny_pipeline
from tests.core.helpers import perturb, tiny_unet, unet_inputs

from .helpers import add_lora, dense_reference, run

METHODS = ("ether", "ether_plus", "oft")


def lora_then_ether(method):
    unet = add_lora(tiny_unet())
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    return unet


@pytest.mark.parametrize("method", METHODS)
def test_lora_then_ether_equals_the_dense_formula(method):
    unet, x = lora_then_ether(method), unet_inputs()
    ref = dense_reference(unet, tiny_unet())
    torch.testing.assert_close(run(unet, x), run(ref, x), atol=2e-5, rtol=2e-5)
    # the LoRA matters: the same adapter without it differs
    assert not torch.allclose(run(unet, x), run(dense_reference(unet, tiny_unet(), lora_scale=0.0), x), atol=1e-3)


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_ether_then_lora_is_the_same_model(method):
    """PEFT wraps the projections after ETHER is on (its target names do not match the adapter's own modules)."""
    first = lora_then_ether(method)
    second = tiny_unet()
    ed.apply_ether(second, ed.EtherConfig(method, 4, init_seed=0))
    add_lora(second)
    second.load_state_dict(first.state_dict())  # the same ETHER and LoRA values
    x = unet_inputs()
    assert not any("processor" in n and "lora" in n for n, _ in second.named_parameters())
    torch.testing.assert_close(run(second, x), run(first, x), atol=1e-6, rtol=1e-6)


def test_lora_scale_in_cross_attention_kwargs():
    unet, x = lora_then_ether("ether_plus"), unet_inputs()
    got = run(unet, x, cross_attention_kwargs={"scale": 0.5})
    torch.testing.assert_close(got, run(dense_reference(unet, tiny_unet(), lora_scale=0.5), x), atol=2e-5,
                               rtol=2e-5)


@pytest.mark.parametrize("method", METHODS)
def test_merge_and_unmerge_with_a_lora_are_exact(method):
    unet, x = lora_then_ether(method), unet_inputs()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    unmerged = {s: run(unet, x, cross_attention_kwargs={"scale": s}) for s in (1.0, 0.3)}
    ed.merge_ether(unet)
    for s, want in unmerged.items():  # the LoRA factors carry the maps: any scale still matches
        torch.testing.assert_close(run(unet, x, cross_attention_kwargs={"scale": s}), want, atol=2e-5, rtol=2e-5)
    ed.unmerge_ether(unet)
    after = unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    torch.testing.assert_close(run(unet, x), unmerged[1.0], atol=1e-6, rtol=1e-6)


def test_a_lora_added_while_merged_refuses_unmerge():
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether", 4, init_seed=0))
    ed.merge_ether(unet)
    add_lora(unet)
    with pytest.raises(ed.EtherError, match="added .* while the ETHER adapter was merged"):
        ed.unmerge_ether(unet)
    assert ed.state.get_state(unet).merged  # nothing changed


def test_training_ether_on_top_of_a_lora():
    unet, x = lora_then_ether("ether_plus"), unet_inputs()
    lora = {n: p.detach().clone() for n, p in unet.named_parameters() if "lora_" in n}
    params = ed.ether_parameters(unet)
    assert {id(p) for p in unet.parameters() if p.requires_grad} == {id(p) for p in params}
    opt = torch.optim.Adam(params, lr=1e-2)
    target = torch.zeros_like(run(unet, x))
    losses = []
    for _ in range(5):
        loss = (unet(**x).sample - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, lora[n]) for n, p in unet.named_parameters() if "lora_" in n)
    # what was trained is still the dense formula with the LoRA inside
    torch.testing.assert_close(run(unet, x), run(dense_reference(unet, tiny_unet()), x), atol=2e-5, rtol=2e-5)


def test_pipeline_load_lora_weights_and_load_ether_in_either_order(tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    source = tiny_pipeline()
    add_lora(source.unet)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(
        source.unet))
    unet = tiny_pipeline().unet
    ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=2)
    ed.save_ether(unet, tmp_path / "ether")

    def images(pipe):
        return pipe(["a photo of sks dog"], num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    orders = []
    for order in (("lora", "ether"), ("ether", "lora")):
        pipe = tiny_pipeline()
        for what in order:
            if what == "lora":
                pipe.load_lora_weights(tmp_path / "lora", weight_name="pytorch_lora_weights.safetensors")
            else:
                ed.load_ether(pipe.unet, tmp_path / "ether")
        orders.append(images(pipe))
    torch.testing.assert_close(torch.from_numpy(orders[1]), torch.from_numpy(orders[0]), atol=1e-5, rtol=1e-5)
    only_ether = tiny_pipeline()
    ed.load_ether(only_ether.unet, tmp_path / "ether")
    assert not torch.allclose(torch.from_numpy(images(only_ether)), torch.from_numpy(orders[0]), atol=1e-3)
