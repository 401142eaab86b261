"""The Triton forms (the per-layer activation form, the step fold) against the plain-PyTorch reference, on a GPU
(run through the device tool).

    python -m pytest tests/gpu -q          # skipped where CUDA or triton is absent

Tolerances (‖out - ref‖ / ‖ref‖ against a float64 reference): float32 inputs 1e-5 for outputs and 1e-4 for
gradients (the kernels compute in float32); bf16 autocast 2e-2, and never more than twice the error of the plain
PyTorch path under the same autocast plus 2e-3.
"""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import functional as Fn
from ether_diffusion import kernels
from ether_diffusion.layer import per_layer_linear
from ether_diffusion.projection import get_projection

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not kernels.triton_available(), reason="needs a CUDA device and triton"),
]

DEV = "cuda"
SHAPES = [  # (B, N, d, f, n)
    (1, 4096, 320, 320, 4),   # SD 1.5 self-attention, 64x64 latents, batch 1
    (4, 77, 768, 640, 16),    # cross-attention k/v on text states, b = 48
    (2, 256, 1280, 1280, 1),  # one block of 1280
    (3, 33, 40, 24, 8),       # ragged rows, b = 5 and 3
    (2, 50, 64, 64, 64),      # n_blocks = d: b = 1
    (1, 1, 16, 48, 4),        # a single token
]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make(method, B, N, d, f, n, seed, dtype=torch.float32, noncontig=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g)
    if noncontig:  # (N, B, d) storage viewed as (B, N, d)
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    x = x.to(DEV, dtype).requires_grad_()
    w = (torch.randn(f, d, generator=g) / d**0.5).to(DEV, dtype)
    bias = (torch.randn(f, generator=g) * 0.1).to(DEV, dtype)
    p_in = {k: torch.randn(s, generator=g).to(DEV).requires_grad_() for k, s in Fn.param_shapes(method, d, n).items()}
    p_out = None
    if method in Fn.OUTPUT_SIDE_METHODS:
        p_out = {k: torch.randn(s, generator=g).to(DEV).requires_grad_()
                 for k, s in Fn.param_shapes(method, f, n).items()}
    return x, w, bias, p_in, p_out


def leaves(x, p_in, p_out):
    return [x, *p_in.values(), *((p_out or {}).values())]


def run(fn, x, w, bias, p_in, p_out, g):
    y = fn(x, w, bias, p_in, p_out)
    return (y, *torch.autograd.grad(y, leaves(x, p_in, p_out), g))


def reference(method, x, w, bias, p_in, p_out, g):
    """The plain-PyTorch activation form in float64: output and gradients."""
    d64 = lambda t: t.detach().double().requires_grad_()  # noqa: E731
    pi = {k: d64(v) for k, v in p_in.items()}
    po = {k: d64(v) for k, v in p_out.items()} if p_out is not None else None
    b64 = bias.double() if bias is not None else None
    return run(lambda *a: Fn.adapted_linear(*a[:3], method, *a[3:]), d64(x), w.double(), b64, pi, po, g.double())


def fast(impl, method, x, w, bias, p_in, p_out, g):
    return run(lambda *a: per_layer_linear(*a[:3], method, *a[3:], impl=impl), x, w, bias, p_in, p_out, g)


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float32_matches_reference(method, shape):
    x, w, bias, p_in, p_out = make(method, *shape, seed=sum(shape), noncontig=shape[0] > 1)
    g = torch.randn(*shape[:2], shape[3], device=DEV)
    out = fast("act", method, x, w, bias, p_in, p_out, g)
    ref = reference(method, x, w, bias, p_in, p_out, g)
    n = shape[4]
    for i, (a, b) in enumerate(zip(out, ref)):
        assert torch.isfinite(a).all()
        assert a.dtype == (x.dtype if i < 2 else torch.float32)
        if i >= 2 and n == shape[2]:  # b = 1: û = sign(u), dL/du is 0 up to float32 rounding of Σ x g
            assert a.abs().max().item() < 1e-6 * (x.norm() * g.norm()).item()
            continue
        assert rel(a, b) < (1e-5 if i == 0 else 1e-4), (i, rel(a, b))


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_bf16_autocast_matches_reference(method, shape):
    """bf16 weights and activations under autocast, float32 adapter parameters (the training setup)."""
    x, w, bias, p_in, p_out = make(method, *shape, seed=7, dtype=torch.bfloat16)
    g = torch.randn(*shape[:2], shape[3], device=DEV, dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = fast("act", method, x, w, bias, p_in, p_out, g)
        plain = fast("torch", method, x, w, bias, p_in, p_out, g)
    ref = reference(method, x, w, bias, p_in, p_out, g)
    assert out[0].dtype == torch.bfloat16
    for i, (a, p, r) in enumerate(zip(out, plain, ref)):
        if i >= 2 and shape[4] == shape[2]:
            continue
        assert rel(a, r) < 2e-2, (i, rel(a, r))
        assert rel(a, r) <= 2 * rel(p, r) + 2e-3, (i, rel(a, r), rel(p, r))


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_every_output_element_is_written(method):
    from ether_diffusion.kernels.triton_reflect import reflect, reflect_backward

    su, sv = (-2.0, 0.0) if method == "ether" else (-1.0, 1.0)
    x = torch.randn(1001, 320, device=DEV)
    u, v = torch.randn(16, 20, device=DEV), torch.randn(16, 20, device=DEV)
    v = v if sv else None
    out = torch.full_like(x, float("nan"))
    reflect(x, u, v, su, sv, out=out)
    ref = Fn.transform(x.double(), method, {"u": u.double(), **({"v": v.double()} if v is not None else {})})
    assert torch.isfinite(out).all() and rel(out, ref) < 1e-6
    dx = torch.full_like(x, float("nan"))
    reflect_backward(torch.randn_like(x), x, u, v, su, sv, dx_out=dx)
    assert torch.isfinite(dx).all()


def perturbed_tiny_unet(method: str, impl: str):
    """The tiny UNet on DEV with ``method`` (n_blocks 4) in form ``impl``, its parameters moved off their init; also
    the inputs of a step: (unet, params, sample (requires grad), text)."""
    from ether_diffusion.models.unet_configs import TINY_UNET, build_unet

    unet = build_unet(TINY_UNET, device=DEV, seed=0)
    ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
    ed.set_impl(unet, impl)
    params = ed.ether_parameters(unet)
    with torch.no_grad():
        for i, p in enumerate(params):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)).to(p) * 0.3)
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 16, 16, generator=gen).to(DEV).requires_grad_()
    text = torch.randn(2, 7, 32, generator=gen).to(DEV)
    return unet, params, sample, text


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_unet_training_step_auto_equals_torch(method):
    """A tiny UNet's loss and adapter gradients: impl='auto' (Triton on CUDA) against impl='torch', float32."""
    torch.backends.cudnn.allow_tf32 = False  # the convolutions must not round differently between the two runs
    results = {}
    for impl in ("auto", "torch"):
        unet, params, sample, text = perturbed_tiny_unet(method, impl)
        loss = unet(sample, 10, text).sample.square().mean()
        grads = torch.autograd.grad(loss, [sample, *params])
        results[impl] = (loss.detach(), grads)
    (la, ga), (lt, gt) = results["auto"], results["torch"]
    assert rel(la, lt) < 1e-5
    for a, b in zip(ga, gt):
        assert rel(a, b) < 1e-4


@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_compiled_step_form_equals_torch(method):
    """torch.compile (inductor) of a tiny UNet: its forward folds every layer through one ``step_fold`` op; loss,
    input and adapter gradients equal impl='torch' in eager float32 over two optimiser steps (the second folds the
    updated parameters), with no recompilation on the second."""
    from torch._inductor.compile_fx import compile_fx

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch._dynamo.reset()
    graphs = []

    def inductor(gm, example_inputs):  # counts dynamo's graphs
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    results = {}
    for impl in ("auto", "torch"):
        unet, params, sample, text = perturbed_tiny_unet(method, impl)
        f = torch.compile(unet, backend=inductor) if impl == "auto" else unet
        opt = torch.optim.SGD(params, lr=0.1)
        results[impl] = []
        for step in range(2):
            if step == 1:
                first = len(graphs)
            opt.zero_grad()
            loss = f(sample, 10, text).sample.square().mean()
            grads = torch.autograd.grad(loss, [sample, *params])
            for p, g in zip(params, grads[1:]):
                p.grad = g
            opt.step()
            results[impl].append((loss.detach(), grads))
        if impl == "auto":
            assert ed.state.get_state(unet).step_fold.traced is None and len(graphs) == first
            ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
            assert sum("ether_diffusion.step_fold" in o for o in ops) == 1, ops
    for (la, ga), (lt, gt) in zip(results["auto"], results["torch"]):
        assert rel(la, lt) < 1e-5
        for a, b in zip(ga, gt):
            assert rel(a, b) < 1e-4


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_step_fold_sd15_shapes_bf16(method, n):
    """The one-launch fold of every layer (impl 'step', the training default) on SD 1.5's attention shapes, bf16
    weights under autocast: outputs and gradients against the float64 reference, per layer, over two optimiser
    steps (the second must see the updated parameters) and in no-grad mode (cached W')."""
    from ether_diffusion.models.unet_configs import SD15_UNET, build_unet

    cfg = dict(SD15_UNET, block_out_channels=[320, 640, 1280, 1280], layers_per_block=1)
    unet = build_unet(cfg, device=DEV, seed=0).to(torch.bfloat16)
    ed.apply_ether(unet, ed.EtherConfig(method, n, init_seed=0))
    state = ed.state.get_state(unet)
    params = ed.ether_parameters(unet)
    with torch.no_grad():
        for i, p in enumerate(params):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)).to(p) * 0.3)
    opt = torch.optim.SGD(params, lr=0.05)
    layers = [(proc, p, get_linear(unet, name, p)) for name, proc in state.processors.items() for p in proc.shapes]
    for step in range(2):
        xs, ys, dys = [], [], []
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for proc, p, lin in layers:
                f, d = lin.weight.shape
                x = torch.randn(2, 64, d, device=DEV, dtype=torch.bfloat16, requires_grad=True)
                ys.append(proc.project(proc_attn(unet, proc), p, x))
                xs.append(x)
                dys.append(torch.randn_like(ys[-1]))
        torch.autograd.backward(ys, dys)
        for (proc, p, lin), x, y, dy in zip(layers, xs, ys, dys):
            p_in, p_out = proc.adapter(p).params()
            leaves = [*p_in.values(), *((p_out or {}).values())]
            ref = reference(method, x, lin.weight, lin.bias, p_in, p_out, dy)
            assert rel(y, ref[0]) < 1e-2
            assert rel(x.grad, ref[1]) < 1e-2
            for leaf, r in zip(leaves, ref[2:]):
                assert rel(leaf.grad, r) < 3e-2, (p, rel(leaf.grad, r))
        opt.step()
        opt.zero_grad()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        proc, p, lin = layers[0]
        x = torch.randn(1, 64, lin.weight.shape[1], device=DEV, dtype=torch.bfloat16)
        y1, y2 = proc.project(proc_attn(unet, proc), p, x), proc.project(proc_attn(unet, proc), p, x)
        p_in, p_out = proc.adapter(p).params()
        assert torch.equal(y1, y2)
        b64 = lin.bias.double() if lin.bias is not None else None
        assert rel(y1, Fn.adapted_linear(x.double(), lin.weight.double(), b64, method,
                                         {k: v.double() for k, v in p_in.items()},
                                         {k: v.double() for k, v in p_out.items()} if p_out else None)) < 1e-2


def proc_attn(unet, proc):
    name = next(k for k, v in ed.state.get_state(unet).processors.items() if v is proc)
    return unet.get_submodule(name)


def get_linear(unet, name, p):
    return get_projection(unet.get_submodule(name), p)
