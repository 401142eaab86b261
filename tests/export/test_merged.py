"""A merged export is a plain diffusers pipeline folder: ``StableDiffusionPipeline.from_pretrained`` loads it with
diffusers' own processors, and it computes what ``merge_ether`` computes (fp32), or holds its weights cast (fp16)."""

import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import load_file

import ether_diffusion as ed
from ether_diffusion.dreambooth.export_run import save_merged

from .helpers import ether_pipeline, peft_lora_pipeline, relative, unet_out


def plain(folder, **kwargs):
    return StableDiffusionPipeline.from_pretrained(str(folder), **kwargs)


def test_merged_fp32_equals_merge_ether(tmp_path):
    pipe = ether_pipeline("ether_plus")
    unmerged = unet_out(pipe)
    reference = ether_pipeline("ether_plus")  # the same adapter, merged by the library's verb
    ed.merge_ether(reference.unet)
    save_merged(pipe, "ether_plus", tmp_path / "merged", torch.float32)
    loaded = plain(tmp_path / "merged")
    assert not hasattr(loaded.unet, "_ether")
    assert {type(p) for p in loaded.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert torch.equal(unet_out(loaded), unet_out(reference))
    assert relative(unet_out(loaded), unmerged) < 1e-5
    assert not list(tmp_path.glob(".*partial"))


def test_merged_fp16_holds_the_merged_weights_cast(tmp_path):
    pipe = ether_pipeline("ether")
    reference = ether_pipeline("ether")
    ed.merge_ether(reference.unet)
    want = {k: v.to(torch.float16) for k, v in reference.unet.state_dict().items()}
    save_merged(pipe, "ether", tmp_path / "merged", torch.float16)
    on_disk = load_file(str(tmp_path / "merged" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in on_disk.values()} == {torch.float16}
    got = plain(tmp_path / "merged", torch_dtype=torch.float16).unet.state_dict()
    assert set(got) == set(want)
    assert all(got[k].dtype == torch.float16 and torch.equal(got[k], want[k]) for k in want)


def test_merged_oft(tmp_path):
    """A method without a low-rank form merges exactly too."""
    pipe = ether_pipeline("oft")
    unmerged = unet_out(pipe)
    save_merged(pipe, "oft", tmp_path / "merged", torch.float32)
    assert relative(unet_out(plain(tmp_path / "merged")), unmerged) < 1e-5


def test_merged_peft_lora(tmp_path):
    """A PEFT LoRA adapter is fused and its layers removed: the folder holds plain projections."""
    from ether_diffusion.models.tiny import tiny_pipeline

    pipe = peft_lora_pipeline()
    want = unet_out(pipe)
    save_merged(pipe, "lora", tmp_path / "merged", torch.float32)
    on_disk = load_file(str(tmp_path / "merged" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not [k for k in on_disk if "lora" in k or "base_layer" in k]
    assert relative(unet_out(plain(tmp_path / "merged")), want) < 1e-5
    assert relative(unet_out(tiny_pipeline()), want) > 1e-2  # the LoRA is in the merged weights
