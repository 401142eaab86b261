"""Where a training step's time goes: host-bound or GPU-bound, and what the adapter's own kernels cost (GPU).

    python benchmarks/profile_step.py --batch 4 --methods floor ether:4 ether_plus:4 peft_lora
    python benchmarks/profile_step.py --batch 4 --compile --top 12      # each model under torch.compile

Same setup as train_step.py. For each method, a few steps under torch.profiler: wall ms per step, GPU-busy ms per
step (sum of kernel times), kernel launches per step, host ms per step (time to issue a step before waiting on the
GPU: close to wall when the step is host-bound), and the GPU time of the kernels whose name matches ``--match`` (the
adapter's own Triton kernels by default). ``--compile``: each model under ``torch.compile`` (the floor too), as in
train_step.py's compile mode; the warm-up compiles.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ether_diffusion.models.unet_configs import SD15_UNET, TINY_UNET, build_unet

try:
    from train_step import add_method
except ImportError:  # run from the repository root as a module
    from benchmarks.train_step import add_method


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unet", choices=["sd15", "tiny"], default="sd15")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=["floor", "ether:4", "ether_plus:4", "peft_lora"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile each model (as train_step.py --mode compile)")
    p.add_argument("--match", nargs="+",
                   default=["one_sided_", "two_sided_", "finish_kernel", "reflect", "unit_backward"])
    p.add_argument("--top", type=int, default=0,
                   help="also list the K rows whose GPU time, and the K whose host time, per step grew most against "
                        "the first method")
    return p.parse_args(argv)


def _self_device_us(e) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(e, attr):
            return float(getattr(e, attr))
    return 0.0


def main(args):
    dev = torch.device("cuda")
    base = build_unet(SD15_UNET if args.unet == "sd15" else TINY_UNET, device=dev).to(torch.bfloat16)
    size, B = base.config.sample_size, args.batch
    lat = torch.randn(B, 4, size, size, device=dev, dtype=torch.bfloat16)
    noise, t = torch.randn_like(lat), torch.randint(0, 1000, (B,), device=dev)
    text = torch.randn(B, 77, base.config.cross_attention_dim, device=dev, dtype=torch.bfloat16)
    mode = "compiled" if args.compile else "eager"
    print(f"{torch.cuda.get_device_name()}, bs {B}, {mode}: per step  wall ms (profiled) | GPU-busy ms | launches | "
          "host ms | adapter kernels ms", flush=True)
    per_kernel = {}  # method -> {kernel name: (launches, GPU ms) per step}
    per_op = {}  # method -> {op name: (calls, host ms of its own) per step}
    for name in args.methods:
        unet = copy.deepcopy(base)
        params = add_method(unet, name)
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True) if params else None
        x = lat.clone().requires_grad_()
        fwd = torch.compile(unet) if args.compile else unet

        def step(opt=opt, fwd=fwd, x=x, marks=None):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            x.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(fwd(x, t, text).sample.float(), noise.float())
            if marks is not None:
                marks.append(time.perf_counter())
            loss.backward()
            if marks is not None:
                marks.append(time.perf_counter())
            if opt is not None:
                opt.step()

        t0 = time.perf_counter()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        host = []  # time to issue one step and its parts (forward, backward, optimiser), the GPU idle at its start
        for _ in range(args.steps):
            marks = [time.perf_counter()]
            step(marks=marks)
            marks.append(time.perf_counter())
            torch.cuda.synchronize()
            host.append([1000 * (b - a) for a, b in zip(marks, marks[1:])] + [1000 * (time.perf_counter() - marks[0])])
        host = sorted(host, key=lambda h: h[-1])[len(host) // 2]  # [fwd, bwd, opt, whole step] of the median step
        plain, host = host[-1], host[:-1]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
            wall = 1000 * (time.perf_counter() - t0) / args.steps
        rows = [(e.key, e.count, _self_device_us(e)) for e in prof.key_averages()]
        rows = [r for r in rows if r[2] > 0]  # kernels (and copies): the rows with device time of their own
        busy = sum(r[2] for r in rows) / 1000 / args.steps
        launches = sum(r[1] for r in rows) // args.steps
        mine = sum(r[2] for r in rows if any(m in r[0] for m in args.match)) / 1000 / args.steps
        print(f"{name:>14}: {plain:6.1f} ({wall:6.1f}) | {busy:8.1f} | {launches:6d} | {sum(host):7.1f} | "
              f"{mine:6.2f}   (host fwd/bwd/opt {'/'.join(f'{h:.1f}' for h in host)}; warm-up {warm:.0f} s)",
              flush=True)
        per_kernel[name] = {r[0]: (r[1] / args.steps, r[2] / 1000 / args.steps) for r in rows}
        per_op[name] = {e.key: (e.count / args.steps, e.self_cpu_time_total / 1000 / args.steps)
                        for e in prof.key_averages()}
        del unet, opt, params
        torch.cuda.empty_cache()
    if args.top:
        print_growth(per_kernel, args.methods, args.top, "GPU")
        print_growth(per_op, args.methods, args.top, "host")


def print_growth(per_kernel: dict, methods: list[str], k: int, what: str) -> None:
    """For each method after the first: the k rows whose ms per step grew most against the first method."""
    ref = per_kernel[methods[0]]
    for name in methods[1:]:
        rows = per_kernel[name]
        keys = set(rows) | set(ref)
        grow = sorted(keys, key=lambda n: ref.get(n, (0, 0))[1] - rows.get(n, (0, 0))[1])[:k]
        print(f"\n{name} against {methods[0]}, {what} time: name | calls per step (ref) | ms per step (ref) | growth")
        for n in grow:
            (c, ms), (c0, ms0) = rows.get(n, (0, 0.0)), ref.get(n, (0, 0.0))
            print(f"  {n[:90]:<90} | {c:6.0f} ({c0:6.0f}) | {ms:7.3f} ({ms0:7.3f}) | {ms - ms0:+7.3f}")


if __name__ == "__main__":
    main(parse_args())
