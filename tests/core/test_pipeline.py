"""The adapter inside a StableDiffusionPipeline, and the tokenizer built from open_clip's BPE."""

import open_clip
import torch

import ether_diffusion as ed
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.models.tokenizer import clip_tokenizer


def generate(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe(["a photo of sks dog"], num_inference_steps=2, height=64, width=64, generator=g,
                output_type="np").images


def test_load_into_pipeline_and_merge(tmp_path):
    pipe = tiny_pipeline()
    ed.apply_ether(pipe.unet, ed.EtherConfig("ether", 4, init_seed=0))
    adapted = generate(pipe)
    ed.save_ether(pipe.unet, tmp_path / "a")

    base_pipe = tiny_pipeline()
    base = generate(base_pipe)
    assert not torch.allclose(torch.from_numpy(base), torch.from_numpy(adapted), atol=1e-3)
    ed.load_ether(base_pipe.unet, tmp_path / "a")
    torch.testing.assert_close(torch.from_numpy(generate(base_pipe)), torch.from_numpy(adapted))
    ed.merge_ether(base_pipe.unet)
    torch.testing.assert_close(torch.from_numpy(generate(base_pipe)), torch.from_numpy(adapted), atol=1e-4,
                               rtol=1e-4)


def test_tokenizer_ids_match_open_clip():
    prompts = ["a photo of sks dog", "a sks backpack with the Eiffel Tower in the background",
               "a sks teapot floating in an ocean of milk", "a red sks clock", "a cube shaped sks can"]
    ours = clip_tokenizer()(prompts, padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
    theirs = open_clip.get_tokenizer("ViT-L-14")(prompts)
    assert len(clip_tokenizer()) == 49408
    for a, b in zip(ours, theirs):
        n = int((b != 0).sum())  # open_clip pads with 0, SD's tokenizer with <|endoftext|>
        assert torch.equal(a[:n], b[:n]) and (a[n:] == 49407).all()
