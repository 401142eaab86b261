"""One adapted projection, forward + backward, in each per-layer form, for each SD 1.5 attention shape (GPU).

    python benchmarks/layer_forms.py            # prints a table; --out writes JSON

Rows: the distinct (tokens, in, out) shapes of SD 1.5's attention projections at 64x64 latents; ``count`` is how many
layers of the UNet have that shape. Columns: the frozen layer alone (grad to x only: the floor's share), and each
per-layer form of ``layer.per_layer_linear`` (``torch``: the PyTorch reference; ``act``: the Triton fallback) for
ether and ether_plus, as extra microseconds over the frozen layer. The last line weights by ``count``: the predicted
extra time per training step of a model the step fold does not serve.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton.testing

from ether_diffusion import functional as Fn
from ether_diffusion.layer import per_layer_linear

# (spatial tokens, channels, layers with tokens x C -> C, layers with 77 x 768 -> C)
SD15 = [(4096, 320, 30, 10), (1024, 640, 30, 10), (256, 1280, 30, 10), (64, 1280, 6, 2)]
FORMS = ["torch", "act"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--n_blocks", type=int, default=4)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def bench(fn) -> float:
    return 1000 * triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")  # microseconds


def time_layer(M, d, f, method, impl, n, dev="cuda"):
    x = torch.randn(M, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(f, d, device=dev, dtype=torch.bfloat16) / d**0.5
    b = torch.randn(f, device=dev, dtype=torch.bfloat16)
    dy = torch.randn(M, f, device=dev, dtype=torch.bfloat16)
    if impl == "frozen":
        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = torch.nn.functional.linear(x, w, b)
            y.backward(dy)
        return bench(step)
    p_in = {k: torch.randn(s, device=dev, requires_grad=True) for k, s in Fn.param_shapes(method, d, n).items()}
    p_out = ({k: torch.randn(s, device=dev, requires_grad=True) for k, s in Fn.param_shapes(method, f, n).items()}
             if method in Fn.OUTPUT_SIDE_METHODS else None)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = per_layer_linear(x, w, b, method, p_in, p_out, impl=impl)
        y.backward(dy)
    return bench(step)


def main(args):
    rows = []
    for B in args.batch:
        for N, C, n_self, n_cross in SD15:
            for M, d, f, count in ((B * N, C, C, n_self), (B * 77, 768, C, n_cross)):
                row = dict(batch=B, tokens=M, d=d, f=f, count=count, frozen=time_layer(M, d, f, None, "frozen", 1))
                for method in ("ether", "ether_plus"):
                    for form in FORMS:
                        row[f"{method}/{form}"] = time_layer(M, d, f, method, form, args.n_blocks) - row["frozen"]
                rows.append(row)
    keys = [f"{m}/{f}" for m in ("ether", "ether_plus") for f in FORMS]
    print(f"extra us over the frozen layer (fwd+bwd, bf16 autocast, n_blocks={args.n_blocks}, "
          f"{torch.cuda.get_device_name()})")
    print(f"{'B':>2} {'M':>6} {'d':>5} {'f':>5} {'cnt':>3} {'frozen':>7} " + " ".join(f"{k:>17}" for k in keys))
    for r in rows:
        print(f"{r['batch']:>2} {r['tokens']:>6} {r['d']:>5} {r['f']:>5} {r['count']:>3} {r['frozen']:>7.1f} "
              + " ".join(f"{r[k]:>17.1f}" for k in keys))
    for B in args.batch:
        tot = {k: sum(r[k] * r["count"] for r in rows if r["batch"] == B) / 1000 for k in keys + ["frozen"]}
        print(f"bs {B}: per step, ms: frozen projections {tot['frozen']:.2f}; extra " +
              ", ".join(f"{k} {tot[k]:.2f}" for k in keys))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(gpu=torch.cuda.get_device_name(), n_blocks=args.n_blocks, rows=rows), fh, indent=2)


if __name__ == "__main__":
    main(parse_args())
