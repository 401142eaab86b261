"""ETHER-family pipelines on the tiny model and a plain diffusers pipeline that loads an exported LoRA file."""

import torch

import ether_diffusion as ed
from ether_diffusion.models.tiny import tiny_pipeline
from tests.core.helpers import perturb, unet_inputs

PROMPT = "a photo of sks dog"


def ether_pipeline(method, n_blocks=4, seed=0):
    """The tiny pipeline with an unmerged adapter moved away from its initial values."""
    pipe = tiny_pipeline()
    ed.apply_ether(pipe.unet, ed.EtherConfig(method, n_blocks, init_seed=seed))
    perturb(ed.ether_parameters(pipe.unet), seed=seed + 1)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def peft_lora_pipeline():
    """The tiny pipeline with a PEFT LoRA adapter as train_dreambooth.py --method lora trains it, B moved off zero."""
    from ether_diffusion.training.adapters import add_adapter

    pipe = tiny_pipeline()
    add_adapter(pipe.unet, "lora", init_seed=0, lora_rank=4, lora_alpha=8)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    return pipe


def lora_pipeline(file):
    """A plain tiny pipeline (no ether-diffusion code on it) with the LoRA file loaded by diffusers itself."""
    pipe = tiny_pipeline()
    pipe.load_lora_weights(str(file.parent), weight_name=file.name)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_out(pipe, seed=0):
    with torch.no_grad():
        return pipe.unet(**unet_inputs(seed=seed)).sample


def images(pipe, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(PROMPT, num_inference_steps=2, height=16, width=16, generator=generator, output_type="np").images


def relative(got, want):
    return float((got - want).norm() / want.norm())
