"""Mixed-subject batches: each sample of a mixed batch equals that prompt generated alone with its adapter merged."""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import functional as Fn
from ether_diffusion.assignment import expand_names
from ether_diffusion.models.tiny import tiny_pipeline

PROMPTS = ["a photo of sks dog", "a sks cat on the beach", "a photo of a dog", "a sks dog in the snow"]
SEEDS = [0, 1, 2, 3]


def make_adapters(tmp_path, method, names=("dog", "cat")):
    paths = {}
    unet = tiny_pipeline().unet
    for i, name in enumerate(names):
        ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=10 + i))
        with torch.no_grad():  # move away from the init so identity methods differ from the base
            g = torch.Generator().manual_seed(i)
            for p in ed.ether_parameters(unet):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        paths[name] = ed.save_ether(unet, tmp_path / name)
        ed.remove_ether(unet)
    return paths


def generate(pipe, prompts, seeds, **kw):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompts, generator=gens, num_inference_steps=2, height=64, width=64, output_type="np",
                guidance_scale=7.5, **kw).images


@pytest.mark.parametrize("method,form", [("ether", "fold"), ("ether_plus", "fold"), ("oft", "fold"),
                                         ("ether", "act"), ("ether_plus", "act")])
def test_mixed_batch_equals_merged_single_runs(tmp_path, method, form):
    paths = make_adapters(tmp_path, method)
    pipe = tiny_pipeline()
    for name, path in paths.items():
        ed.load_ether(pipe.unet, path, adapter_name=name)
    ed.set_mixed_form(pipe.unet, form)
    assert ed.adapter_names(pipe.unet) == ["dog", "cat"]
    choice = ["dog", "cat", "none", "dog"]
    mixed = generate(pipe, PROMPTS, SEEDS, cross_attention_kwargs={"ether_adapters": choice})

    single = tiny_pipeline()  # a fresh base model; each adapter loaded from its file and merged in turn
    for i, name in enumerate(choice):
        if name != "none":
            ed.load_ether(single.unet, paths[name])
            ed.merge_ether(single.unet)
        alone = generate(single, [PROMPTS[i]], [SEEDS[i]])
        if name != "none":
            ed.remove_ether(single.unet)
        torch.testing.assert_close(torch.from_numpy(mixed[i]), torch.from_numpy(alone[0]), atol=2e-4, rtol=1e-3)
    # and the choice matters: the same prompt and seed under two adapters differ
    other = generate(pipe, PROMPTS[:1], SEEDS[:1], cross_attention_kwargs={"ether_adapters": ["cat"]})
    assert not torch.allclose(torch.from_numpy(other[0]), torch.from_numpy(mixed[0]), atol=1e-3)


def test_set_active_adapter_and_errors(tmp_path):
    paths = make_adapters(tmp_path, "ether")
    pipe = tiny_pipeline()
    for name, path in paths.items():
        ed.load_ether(pipe.unet, path, adapter_name=name)
    ed.set_active_adapter(pipe.unet, "dog")
    by_name = generate(pipe, PROMPTS[:1], SEEDS[:1])
    per_sample = generate(pipe, PROMPTS[:1], SEEDS[:1], cross_attention_kwargs={"ether_adapters": ["dog"]})
    torch.testing.assert_close(torch.from_numpy(by_name), torch.from_numpy(per_sample), atol=1e-5, rtol=1e-4)
    with pytest.raises(KeyError, match="not loaded"):
        ed.set_active_adapter(pipe.unet, "horse")
    with pytest.raises(KeyError, match=r"\['horse'\] are not loaded"):
        generate(pipe, PROMPTS[:1], SEEDS[:1], cross_attention_kwargs={"ether_adapters": ["horse"]})
    with pytest.raises(ValueError, match="3 names for a UNet batch of 4"):
        expand_names(["a", "b", "c"], 4)


@pytest.mark.parametrize("method", Fn.METHODS)
def test_per_sample_linear_equals_one_by_one(method):
    f, d, n, B = 12, 8, 2, 3
    W, b = torch.randn(f, d, dtype=torch.float64), torch.randn(f, dtype=torch.float64)
    x = torch.randn(B, 5, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    per = [{k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in Fn.param_shapes(method, d, n).items()}
           for _ in range(B)]
    outs = [{k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in Fn.param_shapes(method, f, n).items()}
            for _ in range(B)] if method in Fn.OUTPUT_SIDE_METHODS else None
    stack = lambda ps: {k: torch.stack([p[k] for p in ps]) for k in ps[0]}  # noqa: E731
    active = torch.tensor([True, False, True])
    y = Fn.adapted_linear_per_sample(x, W, b, method, stack(per), stack(outs) if outs else None, active)
    for i in range(B):
        expected = (Fn.adapted_linear(x[i], W, b, method, per[i], outs[i] if outs else None) if active[i]
                    else x[i] @ W.T + b)
        torch.testing.assert_close(y[i], expected)


def test_mixed_batch_follows_parameter_changes(tmp_path):
    paths = make_adapters(tmp_path, "ether")
    pipe = tiny_pipeline()
    for name, path in paths.items():
        ed.load_ether(pipe.unet, path, adapter_name=name)
    kw = {"cross_attention_kwargs": {"ether_adapters": ["dog", "cat"]}}
    first = generate(pipe, PROMPTS[:2], SEEDS[:2], **kw)
    with torch.no_grad():  # change the cat adapter in place: the next call must see it
        for proc_ in ed.state.get_state(pipe.unet).processors.values():
            for p in proc_.adapters["cat"].parameters():
                p.add_(torch.randn_like(p))
    second = generate(pipe, PROMPTS[:2], SEEDS[:2], **kw)
    torch.testing.assert_close(torch.from_numpy(second[0]), torch.from_numpy(first[0]))  # dog unchanged
    assert not torch.allclose(torch.from_numpy(second[1]), torch.from_numpy(first[1]), atol=1e-3)
    ed.set_mixed_form(pipe.unet, "act")  # and the activation form agrees
    act = generate(pipe, PROMPTS[:2], SEEDS[:2], **kw)
    torch.testing.assert_close(torch.from_numpy(act), torch.from_numpy(second), atol=2e-4, rtol=1e-3)
    ed.set_mixed_form(pipe.unet, "fold")
    with pytest.raises(ValueError, match="unknown"):
        ed.set_mixed_form(pipe.unet, "loop")
    base = generate(pipe, PROMPTS[2:3], SEEDS[2:3], cross_attention_kwargs={"ether_adapters": ["none"]})
    alone = generate(tiny_pipeline(), PROMPTS[2:3], SEEDS[2:3])  # every sample "none": the base model
    torch.testing.assert_close(torch.from_numpy(base), torch.from_numpy(alone), atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("method", Fn.METHODS)
def test_fold_weight_per_adapter_equals_fold_weight(method):
    f, d, n, U = 12, 8, 2, 3
    W = torch.randn(f, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    draw = lambda dim: [{k: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
                         for k, s in Fn.param_shapes(method, dim, n).items()} for _ in range(U)]
    ins, outs = draw(d), (draw(f) if method in Fn.OUTPUT_SIDE_METHODS else None)
    stack = lambda ps: {k: torch.stack([p[k] for p in ps]) for k in ps[0]}  # noqa: E731
    got = Fn.fold_weight_per_adapter(W, method, stack(ins), stack(outs) if outs else None)
    assert got.shape == (U, f, d)
    for i in range(U):
        torch.testing.assert_close(got[i], Fn.fold_weight(W, method, ins[i], outs[i] if outs else None))
