"""New adapter values reach the output whoever writes them: ``.data`` writes (no version change), load_state_dict,
diffusers' EMAModel.copy_to, optimizer steps. Each case against a fresh model built with the same values."""

import textwrap

import pytest
import torch
from diffusers.training_utils import EMAModel

import ether_diffusion as ed
from tests.core.helpers import perturb, tiny_unet, unet_inputs
from tests.speed.test_dispatch import run_interpreted

from .helpers import run

WRITERS = ("data", "load_state_dict", "ema", "optimizer")


def write(unet, writer, source):
    """Give ``unet``'s adapter the values of ``source``'s (same layout) through ``writer``."""
    params, values = ed.ether_parameters(unet), [p.detach().clone() for p in ed.ether_parameters(source)]
    if writer == "data":
        for p, v in zip(params, values):
            p.data.copy_(v)
    elif writer == "load_state_dict":
        unet.load_state_dict(source.state_dict())
    elif writer == "ema":
        ema = EMAModel(values)
        ema.copy_to(params)
    else:  # one SGD step of lr 1 onto the target values: p - (p - v) = v
        opt = torch.optim.SGD(params, lr=1.0)
        for p, v in zip(params, values):
            p.grad = p.detach() - v
        opt.step()


def fresh_like(source, method):
    twin = tiny_unet()
    ed.apply_ether(twin, ed.EtherConfig(method, 4, init_seed=0))
    twin.load_state_dict(source.state_dict())
    return twin


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mixed", [False, True])
def test_new_values_reach_the_output(writer, mixed):
    method, x = "ether_plus", unet_inputs()
    unet, target = tiny_unet(), tiny_unet()
    for model, seed in ((unet, 1), (target, 2)):
        ed.apply_ether(model, ed.EtherConfig(method, 4, init_seed=0))
        perturb(ed.ether_parameters(model), seed=seed)
    kw = {"cross_attention_kwargs": {"ether_adapters": ["default", "none"]}} if mixed else {}
    before = run(unet, x, **kw)  # the sampling loop's previous step
    write(unet, writer, target)
    got, want = run(unet, x, **kw), run(fresh_like(target, method), x, **kw)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(got, before, atol=1e-3)


INTERPRETED = textwrap.dedent("""
    import torch
    import ether_diffusion as ed
    from tests.core.helpers import perturb, tiny_unet, unet_inputs
    from tests.ecosystem.test_caches import WRITERS, fresh_like, write

    x = unet_inputs(batch=1)
    for writer in WRITERS:
        unet, target = tiny_unet(), tiny_unet()
        for model, seed in ((unet, 1), (target, 2)):
            ed.apply_ether(model, ed.EtherConfig("ether_plus", 4, init_seed=0))
            perturb(ed.ether_parameters(model), seed=seed)
        group = ed.state.get_state(unet).step_fold
        with torch.no_grad():
            unet(**x)
            assert group.weights is not None  # the step form ran and folded
            write(unet, writer, target)
            ref = fresh_like(target, "ether_plus")
            ed.set_impl(ref, "torch")
            torch.testing.assert_close(unet(**x).sample, ref(**x).sample, rtol=1e-5, atol=1e-5, msg=writer)
    print("ok")
""")


@pytest.mark.slow
def test_step_form_sees_every_writer_under_the_cpu_interpreter():
    """The step form's folded weights (CUDA; here triton's interpreter) follow each writer."""
    run_interpreted(INTERPRETED)
