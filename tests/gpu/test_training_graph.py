"""The training step replayed from a CUDA graph trains what the eager step trains, resumes exactly, and runs the
DreamBooth and S2I scripts' own code (tiny model on the GPU)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.dreambooth.conftest import DOG, reset_accelerate
from tests.dreambooth.conftest import tiny_config as dreambooth_config
from tests.s2i.conftest import tiny_config as s2i_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def fresh_state():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(autouse=True)
def math_attention():
    """PyTorch's math attention, whose backward is deterministic. The flash and cuDNN kernels accumulate the attention
    gradients with atomics: in some runs an element that lies near a bf16 rounding boundary rounds the other way, the
    ETHER gradients (sums that largely cancel) change by 1% of their largest entry, and AdamW turns that into a 3e-5
    weight difference at the first step with a nonzero learning rate, 1.2e-4 after eight. Eager and graph runs fall
    either way at random, so with those kernels a graph run cannot be told from an eager one at the tolerance below."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def _dreambooth(out, on_step=None, **kw):
    from ether_diffusion.dreambooth.train import train_dreambooth

    reset_accelerate()
    settings = dict(max_train_steps=8, random_flip=True, mixed_precision="bf16", lr_scheduler="linear",
                    lr_warmup_steps=2, logging_steps=3)
    return train_dreambooth(dreambooth_config(out, instance_data_dir=str(DOG), **{**settings, **kw}), on_step=on_step)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in b)


@pytest.mark.parametrize("method", ["ether", "ether_plus", "lora"])
def test_graph_trains_what_the_eager_step_trains(tmp_path, method):
    """Graph and eager runs differ by no more than two eager runs differ (atomics in some backward kernels make runs
    on a GPU differ in the last bits), plus 1e-5: the capturable AdamW computes its bias corrections on the device in
    fp32, the eager one on the host in fp64. A stale input, noise or learning rate in the graph moves the weights
    by about the learning rate (1e-3 per step)."""
    graph = _dreambooth(tmp_path / "graph", method=method, cuda_graph="on")
    eager = _dreambooth(tmp_path / "eager", method=method, cuda_graph="off")
    again = _dreambooth(tmp_path / "again", method=method, cuda_graph="off")
    graph2 = _dreambooth(tmp_path / "graph2", method=method, cuda_graph="on")
    a, b, c, d = (_weights(r["adapter_dir"]) for r in (graph, eager, again, graph2))
    spread = _max_diff(b, c)
    # a graph run repeats itself as an eager run does (a race or a stale buffer would not)
    assert _max_diff(a, d) <= 2 * spread + 1e-7, ("graph vs graph", _max_diff(a, d), "eager vs eager", spread)
    assert _max_diff(a, b) <= 2 * spread + 1e-5, ("graph vs eager", _max_diff(a, b), "eager vs eager", spread)
    assert _max_diff(b, {k: v * 0 for k, v in b.items()}) > 0  # it trained
    assert graph["loss"] == pytest.approx(eager["loss"], rel=1e-3)


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_graph_run_resumes_like_an_uninterrupted_run(tmp_path, method):
    settings = dict(method=method, cuda_graph="on", checkpointing_steps=4, train_batch_size=2,
                    with_prior_preservation=True, class_prompt="a photo of dog", class_data_dir=str(DOG),
                    num_class_images=3)
    full = _weights(_dreambooth(tmp_path / "run", **settings)["adapter_dir"])
    other = _weights(_dreambooth(tmp_path / "other", **settings)["adapter_dir"])  # run-to-run spread
    shutil.rmtree(tmp_path / "run" / "checkpoint-8")
    shutil.rmtree(tmp_path / "run" / "adapter")
    resumed = _weights(_dreambooth(tmp_path / "run", resume_from_checkpoint="latest", **settings)["adapter_dir"])
    spread = _max_diff(full, other)
    assert _max_diff(resumed, full) <= 2 * spread + 1e-7, (_max_diff(resumed, full), spread)
    if spread == 0:
        for k in full:
            assert torch.equal(resumed[k], full[k]), k


def test_s2i_graph_with_cached_latents(tmp_path):
    """S2I (adapter + control encoder, two learning rates) graphed as eager within the run-to-run spread; the cache
    itself is checked against encoding every step on the CPU (tests/s2i/test_cache.py)."""
    from ether_diffusion.models.control import ENCODER_WEIGHTS
    from ether_diffusion.s2i.train import train_s2i

    results = {}
    for name, graph in (("graph", "on"), ("eager", "off"), ("again", "off")):
        reset_accelerate()
        cfg = s2i_config(tmp_path / name, method="ether", cuda_graph=graph, cache_latents="on", max_train_steps=6,
                         mixed_precision="bf16", random_flip=True, latent_cache_dir=str(tmp_path / "cache"),
                         lr_scheduler="cosine", lr_warmup_steps=2)
        model = train_s2i(cfg)["model_dir"]
        results[name] = {**_weights(model), **load_file(str(model / ENCODER_WEIGHTS))}
    spread = _max_diff(results["eager"], results["again"])
    assert _max_diff(results["graph"], results["eager"]) <= 2 * spread + 1e-5, spread


def test_models_the_step_does_not_read_wait_on_the_cpu(tmp_path, monkeypatch):
    """With cached latents the VAE and text encoder sit on the CPU during every step and come back to the GPU for
    validation (a module left on the CPU would fail the validation sampler with a device mismatch)."""
    from ether_diffusion.training import setup

    parked = []
    init = setup.Parked.__init__

    def record(self, modules, device):
        init(self, modules, device)
        parked.append(self)

    monkeypatch.setattr(setup.Parked, "__init__", record)

    def on_step(step):
        devices = {p.device.type for m in parked[0].modules for p in m.parameters()}
        assert devices == {"cpu"}, (step, devices)

    out = _dreambooth(tmp_path / "run", cache_latents="on", validation_prompt="a photo of sks dog",
                      validation_steps=4, num_validation_images=1, on_step=on_step)
    assert len(parked) == 1 and len(parked[0].modules) == 2  # text encoder and VAE
    assert sorted(p.name for p in (out["output_dir"] / "validation").iterdir()) == ["step000004_0.png",
                                                                                   "step000008_0.png"]
    assert {p.device.type for m in parked[0].modules for p in m.parameters()} == {"cpu"}
