"""``ether_adapters`` per image or per prompt, read in diffusers' batch order (prompt-major with
num_images_per_prompt, [uncond; cond] under guidance): every image equals its prompt and seed generated alone with its
adapter merged."""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.assignment import expand_names
from tests.core.helpers import perturb

PROMPTS = ["a photo of sks dog", "a sks cat on the beach"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root, unet, paths = tmp_path_factory.mktemp("adapters"), tiny_pipeline().unet, {}
    for i, name in enumerate(("dog", "cat")):
        ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=i))
        perturb(ed.ether_parameters(unet), seed=i, scale=0.4)
        paths[name] = ed.save_ether(unet, root / name)
        ed.remove_ether(unet)
    return paths


def generate(pipe, prompts, seeds, guidance, **kw):
    return pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], num_inference_steps=2,
                height=64, width=64, output_type="np", guidance_scale=guidance, **kw).images


_ALONE: dict = {}


def alone(paths, name, prompt, seed, guidance):
    key = (name, prompt, seed, guidance)
    if key not in _ALONE:
        pipe = tiny_pipeline()
        if name != "none":
            ed.load_ether(pipe.unet, paths[name])
            ed.merge_ether(pipe.unet)
        _ALONE[key] = generate(pipe, [prompt], [seed], guidance)[0]
    return _ALONE[key]


@pytest.mark.parametrize("guidance", [7.5, 1.0])
@pytest.mark.parametrize("per", ["prompt", "image", "prompt_explicit"])
def test_each_image_equals_its_prompt_generated_alone(adapters, guidance, per):
    pipe = tiny_pipeline()
    for name, path in adapters.items():
        ed.load_ether(pipe.unet, path, adapter_name=name)
    k, seeds = 2, [10, 11, 12, 13]  # images prompt-major: p0 i0, p0 i1, p1 i0, p1 i1
    per_image = ["dog", "dog", "cat", "none"]
    extra = {"prompt": {"ether_adapters": ["dog", "cat"]},
             "image": {"ether_adapters": per_image},
             "prompt_explicit": {"ether_adapters": ["dog", "cat"], "ether_images_per_prompt": k}}[per]
    if per != "image":
        per_image = ["dog", "dog", "cat", "cat"]
    images = generate(pipe, PROMPTS, seeds, guidance, num_images_per_prompt=k, cross_attention_kwargs=extra)
    for i, (name, seed) in enumerate(zip(per_image, seeds)):
        want = alone(adapters, name, PROMPTS[i // k], seed, guidance)
        torch.testing.assert_close(torch.from_numpy(images[i]), torch.from_numpy(want), atol=2e-4, rtol=1e-3)


def test_other_lengths_are_refused_in_one_line(adapters):
    pipe = tiny_pipeline()
    for name, path in adapters.items():
        ed.load_ether(pipe.unet, path, adapter_name=name)
    for extra in ({"ether_adapters": ["dog", "cat", "dog"]},  # 3 names for 2 prompts x 2 images
                  {"ether_adapters": ["dog"], "ether_images_per_prompt": 2}):
        with pytest.raises(ValueError) as err:
            generate(pipe, PROMPTS, [0, 1, 2, 3], 7.5, num_images_per_prompt=2, cross_attention_kwargs=extra)
        assert "\n" not in str(err.value)
    ed.set_active_adapter(pipe.unet, "dog")
    ed.merge_ether(pipe.unet)
    with pytest.raises(ed.EtherError, match="unmerge_ether"):
        generate(pipe, PROMPTS[:1], [0], 7.5, cross_attention_kwargs={"ether_adapters": ["cat"]})


def test_expand_names_rules():
    assert expand_names(["a", "b"], 2) == ["a", "b"]
    assert expand_names(["a", "b"], 4, guidance=True) == ["a", "b", "a", "b"]
    assert expand_names(["a", "b"], 4, guidance=False) == ["a", "a", "b", "b"]
    assert expand_names(["a", "b"], 8, guidance=True) == ["a", "a", "b", "b"] * 2
    assert expand_names(["a", None], 6, images_per_prompt=3) == ["a"] * 3 + ["none"] * 3
    assert expand_names(["a"], 4, images_per_prompt=2) == ["a"] * 4
    with pytest.raises(ValueError, match="not known here"):
        expand_names(["a", "b"], 4)
    with pytest.raises(ValueError, match="must be 2, or 4"):
        expand_names(["a", "b"], 4, images_per_prompt=1, guidance=False)
