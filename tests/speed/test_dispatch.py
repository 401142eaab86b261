"""How projections are computed (``layer.per_layer_linear``, ``model.set_impl``) and the Triton forms on the CPU.

The Triton kernels run here under triton's CPU interpreter (a subprocess, since TRITON_INTERPRET must be set before
triton loads): the activation form, the step fold's plans, the step fold of a tiny UNet, eager and compiled; on a
GPU, tests/gpu compares them with the reference at full size.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import functional as Fn
from ether_diffusion.layer import per_layer_linear
from tests.core.helpers import tiny_unet


def params(method, dim, n, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
            for k, s in Fn.param_shapes(method, dim, n).items()}


def test_auto_on_cpu_is_the_plain_path_bit_for_bit():
    x = torch.randn(3, 7, 16)
    w, b = torch.randn(8, 16), torch.randn(8)
    for method in Fn.METHODS:
        p_in = {k: torch.randn(s) for k, s in Fn.param_shapes(method, 16, 4).items()}
        p_out = ({k: torch.randn(s) for k, s in Fn.param_shapes(method, 8, 4).items()}
                 if method in Fn.OUTPUT_SIDE_METHODS else None)
        assert torch.equal(per_layer_linear(x, w, b, method, p_in, p_out),
                           Fn.adapted_linear(x, w, b, method, p_in, p_out))


def test_errors_say_what_to_do():
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    p = {"u": torch.randn(2, 4)}
    with pytest.raises(ValueError, match="choose one of"):
        per_layer_linear(x, w, None, "ether", p, impl="fast")
    with pytest.raises(ValueError, match="use impl='torch'"):
        per_layer_linear(x, w, None, "oft", {"s": torch.zeros(2, 6)}, impl="act")
    with pytest.raises(RuntimeError, match="use impl='auto'"):
        per_layer_linear(x, w, None, "ether", p, impl="step")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA tensor"):
            per_layer_linear(x, w, None, "ether", p, impl="act")


def test_set_impl_takes_the_forms_and_refuses_others():
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether", 4, init_seed=0))
    for impl in ("torch", "act", "step", "auto"):
        ed.set_impl(unet, impl)
        assert {proc.impl for proc in ed.state.get_state(unet).processors.values()} == {impl}
    for impl in ("cuda", "fold", "torch_fold"):
        with pytest.raises(ValueError, match="choose one of"):
            ed.set_impl(unet, impl)


INTERPRETED = textwrap.dedent("""
    import torch
    from ether_diffusion import functional as Fn
    from ether_diffusion.kernels.act_form import act_linear
    torch.manual_seed(0)
    for method in ("ether", "ether_plus"):
        for B, N, d, f, n in ((2, 9, 24, 16, 4), (1, 3, 8, 8, 8), (2, 70, 16, 32, 1)):
            x = torch.randn(N, B, d).transpose(0, 1).requires_grad_()   # non-contiguous
            w, b = torch.randn(f, d), torch.randn(f)
            p_in = {k: torch.randn(s).requires_grad_() for k, s in Fn.param_shapes(method, d, n).items()}
            p_out = ({k: torch.randn(s).requires_grad_() for k, s in Fn.param_shapes(method, f, n).items()}
                     if method == "ether_plus" else None)
            leaves = [x, *p_in.values(), *((p_out or {}).values())]
            dy = torch.randn(B, N, f)
            y = act_linear(x, w, b, method, p_in, p_out)
            y0 = Fn.adapted_linear(x, w, b, method, p_in, p_out)
            torch.testing.assert_close(y, y0, rtol=1e-4, atol=1e-4)
            for g, g0 in zip(torch.autograd.grad(y, leaves, dy), torch.autograd.grad(y0, leaves, dy)):
                torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-4)
    print("ok")
""")


def run_interpreted(code: str, timeout: int = 300) -> None:
    """Run ``code`` (which prints "ok") in a fresh process under triton's CPU interpreter (``timeout`` seconds;
    scripts that compile a UNet get more: a cold CI machine took over 300 s for one)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_triton_kernels_under_the_cpu_interpreter():
    run_interpreted(INTERPRETED)


STEP_FOLD = textwrap.dedent("""
    import torch
    from ether_diffusion import functional as Fn
    from ether_diffusion.kernels import one_sided, two_sided
    from ether_diffusion.kernels.step_fold_ops import StepFoldFn, make_plan
    torch.manual_seed(0)
    shapes = [(8, 16), (16, 8), (12, 12), (40, 8), (24, 64)]
    default_rows, default_chunk = one_sided.rows_per_item, two_sided.chunk_rows
    # (method, n, work-item rows): the default sizing, and several items per block (ether: 8 rows per item;
    # ether_plus: row blocks cut into chunks of 3 rows, whose column sums meet in partials)
    cases = [("ether", 1, None), ("ether", 4, None), ("ether_plus", 1, None), ("ether_plus", 4, None),
             ("ether", 4, 8), ("ether_plus", 4, 8)]
    for method, n, rows in cases:
        su, sv = (-2.0, 0.0) if method == "ether" else (-1.0, 1.0)
        one_sided.rows_per_item = default_rows if rows is None else (lambda bb, rows=rows: rows)
        two_sided.chunk_rows = default_chunk if rows is None else (lambda B: 3)
        weights = [torch.randn(f, d) for f, d in shapes]
        weights[1] = torch.randn(8, 16).t()  # a transposed weight: any strides
        prm = []
        for f, d in shapes:
            p_in = [torch.randn(n, d // n).requires_grad_() for _ in range(1 if method == "ether" else 2)]
            p_out = [torch.randn(n, f // n).requires_grad_() for _ in range(2)] if method == "ether_plus" else []
            prm.append(tuple(p_in + [None] * (2 - len(p_in)) + (p_out or [None, None])))
        plan = make_plan(weights, prm, n)
        flat = [p for ps in prm for p in ps if p is not None]
        outs = StepFoldFn.apply(plan, torch.float32, su, sv, plan.shapes, *flat)
        dys = [torch.randn(f, d) for f, d in shapes]
        grads = torch.autograd.grad(outs, flat, dys)
        refs = []
        for w, ps in zip(weights, prm):
            p_in = {"u": ps[0], **({"v": ps[1]} if ps[1] is not None else {})}
            p_out = {"u": ps[2], "v": ps[3]} if ps[2] is not None else None
            refs.append(Fn.fold_weight(w, method, p_in, p_out))
        ref_grads = torch.autograd.grad(refs, flat, dys)
        for a, b in zip(outs, refs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    print("ok")
""")


@pytest.mark.slow
def test_step_fold_kernels_under_the_cpu_interpreter():
    """The step fold's launches fold every layer (different shapes, strides, one or several work items per block):
    outputs and parameter gradients equal ``functional.fold_weight`` through autograd."""
    run_interpreted(STEP_FOLD)


TINY = textwrap.dedent("""
    import torch
    import ether_diffusion as ed
    from ether_diffusion.models.unet_configs import TINY_UNET, build_unet

    def perturbed_unet(method, impl):
        # the tiny UNet with ``method`` (n_blocks 4) in form ``impl``, its parameters moved off their init
        unet = build_unet(TINY_UNET, seed=0)
        ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
        ed.set_impl(unet, impl)
        params = ed.ether_parameters(unet)
        with torch.no_grad():
            for i, p in enumerate(params):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.3)
        return unet, params

    def counting_aot_eager(graphs):
        # a backend that keeps dynamo's graphs, then runs AOT autograd (fake tensors, custom ops' backward)
        aot_eager = torch._dynamo.lookup_backend("aot_eager")

        def backend(gm, example_inputs):
            graphs.append(gm)
            return aot_eager(gm, example_inputs)
        return backend
""")


STEP_UNET = TINY + textwrap.dedent("""
    for method in ("ether", "ether_plus"):
        out = {}
        for impl in ("auto", "torch"):
            unet, params = perturbed_unet(method, impl)
            gen = torch.Generator().manual_seed(1)
            sample = torch.randn(2, 4, 16, 16, generator=gen).requires_grad_()
            text = torch.randn(2, 7, 32, generator=gen)
            opt = torch.optim.SGD(params, lr=0.1)
            procs = ed.state.get_state(unet).processors
            group = next(iter(procs.values())).step_fold
            served = []  # what each shared-input call got: one GEMM (a list) or None (one by one)
            if group is not None:
                many = group.linear_many
                group.linear_many = lambda *a: served.append(many(*a)) or served[-1]
            losses, grads = [], None
            for step in range(2):  # the second step must see the updated parameters
                loss = unet(sample, 10, text).sample.square().mean()
                grads = torch.autograd.grad(loss, [sample, *params])
                for p, g in zip(params, grads[1:]):
                    p.grad = g
                opt.step()
                losses.append(loss.detach())
            out[impl] = (losses, grads)
            assert (group.weights is not None) == (impl == "auto")  # the step form ran (and only for auto)
            if impl == "auto":  # q, k, v of self-attention and k, v of cross-attention: one GEMM each
                cross = [unet.get_submodule(n).is_cross_attention for n in procs]
                assert sorted(len(s) for s in group.segments) == sorted(
                    [1] * len(cross) + [2 if c else 3 for c in cross] + [1] * sum(cross))
                assert len(served) == 2 * len(procs) and all(isinstance(y, list) for y in served), served
        for a, b in zip(out["auto"][0], out["torch"][0]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(out["auto"][1], out["torch"][1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    print("ok")
""")


@pytest.mark.slow
def test_step_form_trains_a_tiny_unet_like_the_plain_path_under_the_cpu_interpreter():
    """impl='auto' picks the step form for a model from ``apply_ether`` (here on CPU through triton's interpreter):
    two SGD steps give the plain path's losses and gradients."""
    run_interpreted(STEP_UNET)


STEP_CACHE = textwrap.dedent("""
    import copy
    import torch
    import ether_diffusion as ed
    from ether_diffusion.models.unet_configs import TINY_UNET, build_unet

    def outputs(unet, x, text):
        return unet(x, 10, text).sample

    for method in ("ether", "ether_plus"):
        unet = build_unet(TINY_UNET, seed=0)
        ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
        ref = build_unet(TINY_UNET, seed=0)
        ed.apply_ether(ref, ed.EtherConfig(method, 4, init_seed=0))
        ed.set_impl(ref, "torch")
        procs = list(ed.state.get_state(unet).processors.values())
        group = procs[0].step_fold
        gen = torch.Generator().manual_seed(0)
        x, text = torch.randn(1, 4, 16, 16, generator=gen), torch.randn(1, 7, 32, generator=gen)

        def check(what):
            with torch.no_grad():
                got, want = outputs(unet, x, text), outputs(ref, x, text)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=what)
            assert got.grad_fn is None

        folds = []
        fold = group.fold
        group.fold = lambda dtype: folds.append(dtype) or fold(dtype)
        outputs(unet, x, text).sum().backward()  # a fold with gradients, then used without: detached
        check("after a training forward")
        assert len(folds) == 2  # one fold per forward, shared by every layer
        check("next forward")
        assert len(folds) == 3  # a new forward folds anew: nothing is kept from one forward to the next
        for model in (unet, ref):  # in place (_version), to a new direction (a rescaled u reflects alike)
            with torch.no_grad():
                next(iter(ed.state.get_state(model).processors.values())).adapter("to_q").in_u.add_(0.3)
        check("in-place update")
        for model in (unet, ref):  # a new Parameter object
            a = next(iter(ed.state.get_state(model).processors.values())).adapter("to_k")
            a.in_u = torch.nn.Parameter(a.in_u.detach() + 0.3)
        check("replaced parameter")
        for model in (unet, ref):  # written behind autograd's back: no _version change (EMAModel.copy_to does this)
            for q in ed.ether_parameters(model)[:6]:
                q.data.copy_(q.data * -1.5 + 0.1)
        check(".data write")
        for model in (unet, ref):  # another active adapter
            for proc in ed.state.get_state(model).processors.values():
                proc.add_adapter("other", torch.Generator().manual_seed(5))
                proc.active = "other"
        check("other adapter")
        # another layer not whole (as a sharding wrapper leaves the units not running): no fold, per-layer form
        names = list(ed.state.get_state(unet).processors)
        first, last = unet.get_submodule(names[0]), unet.get_submodule(names[-1])
        full = last.to_q.weight.data
        last.to_q.weight.data = torch.empty(0)
        h = torch.randn(1, 5, first.to_q.weight.shape[1], generator=gen)
        ref_first = ref.get_submodule(names[0])
        with torch.no_grad():  # a change that needs a refold, made while the other layer is partial
            for model in (unet, ref):
                ed.state.get_state(model).processors[names[0]].adapter("to_q").in_u.add_(0.2)
            got = ed.state.get_state(unet).processors[names[0]].project(first, "to_q", h)
            want = ed.state.get_state(ref).processors[names[0]].project(ref_first, "to_q", h)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert group.weights is None
        last.to_q.weight.data = full
        check("whole again")
        assert group.weights is not None
        clone = copy.deepcopy(unet)  # its processors point back to its own StepFold
        cloned = ed.state.get_state(clone)
        assert cloned.step_fold is not group
        assert next(iter(cloned.processors.values())).step_fold is cloned.step_fold
        with torch.no_grad():
            torch.testing.assert_close(outputs(clone, x, text), outputs(ref, x, text), rtol=1e-5, atol=1e-5)
        assert cloned.step_fold.weights is not None  # the copy folded for itself
        assert cloned.step_fold.forwards is cloned.forwards  # and counts its own forwards
        for model in (clone, ref):
            for q in ed.ether_parameters(model)[:4]:
                q.data.mul_(-1.0)
        with torch.no_grad():
            torch.testing.assert_close(outputs(clone, x, text), outputs(ref, x, text), rtol=1e-5, atol=1e-5)
    print("ok")
""")


@pytest.mark.slow
def test_step_form_cache_follows_parameter_changes_under_the_cpu_interpreter():
    """The step form folds once per forward (every layer shares it) and anew in the next, so it follows parameters
    changed in place, replaced by a new Parameter, written through ``.data`` (no version change), or another active
    adapter; while some layer does not hold its whole weight nothing is folded (that call takes the per-layer
    form). Every case matches the plain path."""
    run_interpreted(STEP_CACHE)


COMPILE_STEP = TINY + textwrap.dedent("""
    for method in METHODS:  # set by the test
        out = {}
        for impl in ("auto", "torch"):
            torch._dynamo.reset()
            unet, params = perturbed_unet(method, impl)
            graphs = []
            f = torch.compile(unet, backend=counting_aot_eager(graphs)) if impl == "auto" else unet
            opt = torch.optim.SGD(params, lr=0.1)
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(2, 4, 16, 16, generator=gen).requires_grad_()
            text = torch.randn(2, 7, 32, generator=gen)
            out[impl] = []
            for step in range(3):  # optimiser steps in between: the next forward must fold the new parameters
                opt.zero_grad()
                loss = f(x, 10, text).sample.square().mean()
                loss.backward()
                out[impl].append((loss.detach(), [x.grad.clone()] + [p.grad.clone() for p in params]))
                x.grad = None
                opt.step()
                if step == 0:
                    first = len(graphs)
            if impl == "auto":
                ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
                assert len(graphs) == first == 1, (len(graphs), first)
                assert sum("ether_diffusion.step_fold" in o for o in ops) == 1, ops
                assert ed.state.get_state(unet).step_fold.traced is None  # nothing held after the forward
                with torch.no_grad():  # a compiled sampling step (no autograd around the op)
                    out["sample"] = f(x, 10, text).sample
                ed.remove_ether(unet)
                assert not unet._forward_pre_hooks and not unet._forward_hooks
                assert ed.state.get_state(unet, required=False) is None
        for (la, ga), (lb, gb) in zip(out["auto"], out["torch"]):
            torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
            for a, b in zip(ga, gb):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        with torch.no_grad():  # unet: the plain-path model, after the same three updates
            torch.testing.assert_close(out["sample"], unet(x, 10, text).sample, rtol=1e-5, atol=1e-5)
    print("ok")
""")


COMPILE_STEP_CHECKPOINTED = TINY + textwrap.dedent("""
    out = {}
    for impl in ("auto", "torch"):
        torch._dynamo.reset()
        unet, params = perturbed_unet("ether_plus", impl)
        unet.enable_gradient_checkpointing()  # the blocks' forwards run again inside the backward
        unet.train()
        f = torch.compile(unet, backend="aot_eager") if impl == "auto" else unet
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 4, 16, 16, generator=gen)
        text = torch.randn(2, 7, 32, generator=gen)
        loss = f(x, 10, text).sample.square().mean()
        out[impl] = (loss.detach(), torch.autograd.grad(loss, params))
    torch.testing.assert_close(out["auto"][0], out["torch"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(out["auto"][1], out["torch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    print("ok")
""")


@pytest.mark.slow
def test_compiled_step_form_with_gradient_checkpointing_under_the_cpu_interpreter():
    """torch.compile of a UNet with gradient checkpointing on: the step op's loss and gradients equal the plain
    path's."""
    run_interpreted(COMPILE_STEP_CHECKPOINTED, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ether", "ether_plus"])
def test_step_form_under_torch_compile_is_one_custom_op_per_forward_under_the_cpu_interpreter(method):
    """The default form under torch.compile: the model's forward pre-hook folds every layer through one
    ``ether_diffusion::step_fold`` op (no per-layer fold), later steps reuse the compiled graphs, and over three
    optimiser steps the losses and gradients (input and parameters) equal the plain path's, as does a compiled
    no-grad forward after them; ``remove_ether`` takes the hooks off."""
    run_interpreted(f"METHODS = ({method!r},)\n" + COMPILE_STEP, timeout=900)


def test_segments_group_the_projections_that_share_an_input():
    """q, k, v of a self-attention processor form one segment; in a cross-attention processor only k, v do (the
    query reads the hidden states), even where the widths match; a bias or another width ends a run."""
    from ether_diffusion.kernels.step_fold import segments

    class Proc:
        pass

    def layer(proc, name, d, bias=False):
        return (proc, name, torch.nn.Linear(d, 4, bias=bias))

    self_attn, cross, other = Proc(), Proc(), Proc()
    layers = [layer(self_attn, p, 8) for p in ("to_q", "to_k", "to_v")] + [layer(self_attn, "to_out.0", 4, True)]
    layers += [layer(cross, p, 8) for p in ("to_q", "to_k", "to_v")] + [layer(cross, "to_out.0", 4, True)]
    layers += [layer(other, "to_q", 8), layer(other, "to_k", 8, bias=True), layer(other, "to_v", 8),
               layer(other, "to_out.0", 4)]
    runs = [(r.start, r.stop) for r in segments(layers, frozenset([id(cross)]))]
    assert runs == [(0, 3), (3, 4), (4, 5), (5, 7), (7, 8), (8, 9), (9, 10), (10, 11), (11, 12)]
    runs = [(r.start, r.stop) for r in segments(layers)]  # no processor marked cross: q, k, v together
    assert runs[:4] == [(0, 3), (3, 4), (4, 7), (7, 8)]

