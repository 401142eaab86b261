"""accelerate's offload hooks (what enable_sequential_cpu_offload / enable_model_cpu_offload install) around an
adapted model give the output of the model kept in memory."""

import pytest
import torch
from accelerate import cpu_offload, cpu_offload_with_hook

import ether_diffusion as ed
from ether_diffusion.models.tiny import tiny_pipeline
from tests.core.helpers import perturb, tiny_unet, unet_inputs

from .helpers import add_lora, run


def adapted(method, lora=False):
    unet = tiny_unet()
    if lora:
        add_lora(unet)
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    return unet


@pytest.mark.parametrize("method,lora", [("ether", False), ("ether_plus", False), ("oft", False),
                                         ("ether_plus", True)])
def test_sequential_offload_hooks_give_the_same_output(method, lora):
    unet, x = adapted(method, lora), unet_inputs()
    want = run(unet, x)
    cpu_offload(unet, execution_device=torch.device("cpu"))
    assert next(unet.parameters()).device.type == "meta"  # the weights really are offloaded
    torch.testing.assert_close(run(unet, x), want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ed.EtherError, match="offloaded"):
        ed.merge_ether(unet)


def test_model_offload_hook_gives_the_same_output():
    unet, x = adapted("ether_plus"), unet_inputs()
    want = run(unet, x)
    unet, hook = cpu_offload_with_hook(unet, execution_device=torch.device("cpu"))
    torch.testing.assert_close(run(unet, x), want, atol=1e-6, rtol=1e-6)
    hook.offload()


def test_pipeline_sequential_offload_and_mixed_batches(tmp_path):
    unet = tiny_pipeline().unet
    for name, seed in (("dog", 1), ("cat", 2)):
        ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=seed))
        perturb(ed.ether_parameters(unet), seed=seed)
        ed.save_ether(unet, tmp_path / name)
        ed.remove_ether(unet)

    def images(offload):
        pipe = tiny_pipeline()
        for name in ("dog", "cat"):
            ed.load_ether(pipe.unet, tmp_path / name, adapter_name=name)
        if offload:  # the UNet's part of enable_sequential_cpu_offload (tests/gpu runs the pipeline's own)
            cpu_offload(pipe.unet, execution_device=torch.device("cpu"))
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return pipe(["a sks dog", "a sks cat"], num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=gens, cross_attention_kwargs={"ether_adapters": ["dog", "cat"]}).images

    torch.testing.assert_close(torch.from_numpy(images(True)), torch.from_numpy(images(False)), atol=1e-5,
                               rtol=1e-5)
