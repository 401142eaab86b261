"""ETHER beside other diffusers features on a GPU (run through the device tool): the step form with a LoRA on some
projections, the pipeline's own offload modes, values written behind autograd's back, sliced attention."""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import kernels
from ether_diffusion.models.tiny import tiny_pipeline
from tests.core.helpers import perturb, tiny_unet, unet_inputs
from tests.ecosystem.helpers import add_lora, dense_reference, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not kernels.triton_available(), reason="needs a CUDA device and triton"),
]

DEV = "cuda"


def cuda_inputs(batch=2):
    return {k: v.to(DEV) if torch.is_tensor(v) else v for k, v in unet_inputs(batch=batch).items()}


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_step_form_beside_a_lora_on_some_projections(method):
    """A LoRA on q and v only: those take the module call, the others the step form; the whole equals the dense
    formula, and the step form did fold."""
    unet = tiny_unet()
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]))
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    unet.to(DEV)
    x = cuda_inputs()
    got = run(unet, x)
    assert unet._ether_step_fold.weights is not None
    ref = dense_reference(unet.cpu(), tiny_unet()).to(DEV)
    torch.testing.assert_close(got, run(ref, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_pipeline_offload_modes_give_the_same_images(offload, tmp_path):
    unet = tiny_pipeline().unet
    ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    path = ed.save_ether(unet, tmp_path / "a")

    def images(mode):
        pipe = tiny_pipeline()
        ed.load_ether(pipe.unet, path)
        if mode == "model":
            pipe.enable_model_cpu_offload()
        elif mode == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(DEV)
        return pipe(["a photo of sks dog"], num_inference_steps=3, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    torch.testing.assert_close(torch.from_numpy(images(offload)), torch.from_numpy(images(None)), atol=1e-4,
                               rtol=1e-4)


def test_data_writes_reach_the_step_form():
    from diffusers.training_utils import EMAModel

    unet, target = tiny_unet().to(DEV), tiny_unet().to(DEV)
    for model, seed in ((unet, 1), (target, 2)):
        ed.apply_ether(model, ed.EtherConfig("ether_plus", 4, init_seed=0))
        perturb(ed.ether_parameters(model), seed=seed)
    x = cuda_inputs()
    run(unet, x)
    EMAModel([p.detach().clone() for p in ed.ether_parameters(target)]).copy_to(ed.ether_parameters(unet))
    kernels.set_impl(target, "torch")
    torch.testing.assert_close(run(unet, x), run(target, x), atol=1e-4, rtol=1e-4)


def test_sliced_attention_with_the_step_form():
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether_plus", 4, init_seed=0))
    perturb(ed.ether_parameters(unet), seed=1)
    unet.to(DEV)
    x = cuda_inputs()
    want = run(unet, x)
    unet.set_attention_slice(1)
    torch.testing.assert_close(run(unet, x), want, atol=1e-5, rtol=1e-5)
