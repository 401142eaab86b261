"""Tile shapes of the step-fold kernels on SD 1.5's 128 attention projections (bf16 W, n = 4): fold and backward ms
per (tile elements, warps, rows per ETHER+ work item), timed with CUDA events (median of 25). GPU only:

    python benchmarks/tile_sweep.py        # results/tile_sweep_<GPU>.log holds one run
"""
import statistics
import sys
import time

import torch

from ether_diffusion.kernels import two_sided
from ether_diffusion.kernels.step_fold_ops import make_plan

dev = "cuda"
shapes = []  # SD 1.5's attention projections (f, d): per transformer block q, k, v, out of attn1, q of attn2, ...
for c, blocks in ((320, 5), (640, 5), (1280, 6)):
    for _ in range(blocks):
        shapes += [(c, c)] * 5 + [(c, 768)] * 2 + [(c, c)]
assert len(shapes) == 128
weights: list = []  # bf16 (f, d), made by main()

def params(method, n):
    prm = []
    for f, d in shapes:
        k = 1 if method == "ether" else 2
        pi = [torch.randn(n, d // n, device=dev, requires_grad=True) for _ in range(k)]
        po = ([torch.randn(n, f // n, device=dev, requires_grad=True) for _ in range(2)]
              if method == "ether_plus" else [])
        prm.append(tuple(pi + [None] * (2 - k) + (po or [None, None])))
    return prm

def timeit(fn, reps=25):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)

def bench(method, n, su, sv, tweak):
    prm = params(method, n)
    plan = make_plan(weights, prm, n)
    tweak(plan)
    g = torch.randn(plan.total, device=dev, dtype=torch.bfloat16)
    saved = {}
    def fwd():
        saved["f"] = plan.fold(torch.bfloat16, su, sv)
    def bwd():
        plan.backward(g, saved["f"][1], su, sv)
    t0 = time.time()
    fwd(); bwd(); torch.cuda.synchronize()
    comp = time.time() - t0
    return timeit(fwd), timeit(bwd), comp

def set_tiles(E, warps):
    def tweak(plan):
        for L in plan.launches:
            L.bm = max(1, E // L.bb)
            L.warps = warps
    return tweak

def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("tile_sweep.py times the Triton step-fold kernels: it needs a CUDA GPU")
    torch.manual_seed(0)
    weights[:] = [torch.randn(f, d, device=dev, dtype=torch.bfloat16) / d**0.5 for f, d in shapes]
    print("ether_plus n=4: tile elems, warps, chunk rows -> fold ms, backward ms (compile s)", flush=True)
    default_chunk = two_sided.chunk_rows
    for R in (64, 32, 128):
        two_sided.chunk_rows = lambda B, R=R: -(-B // max(1, round(B / R)))
        configs = [(E, w) for E in (1024, 2048, 4096) for w in (4, 8)] if R == 64 else [(2048, 4), (4096, 8)]
        for E, w in configs:
            f, b, c = bench("ether_plus", 4, -1.0, 1.0, set_tiles(E, w))
            print(f"  E={E:5d} warps={w} R={R:3d}: fold {f:.3f}  backward {b:.3f}  ({c:.1f} s)", flush=True)
    two_sided.chunk_rows = default_chunk
    for n in (1, 16):
        f, b, c = bench("ether_plus", n, -1.0, 1.0, lambda p: None)
        print(f"  default n={n}: fold {f:.3f}  backward {b:.3f}", flush=True)
    print("ether n=4: tile elems, warps -> fold ms, backward ms", flush=True)
    for E, w in ((4096, 8), (2048, 4), (4096, 4), (8192, 8), (8192, 16), (2048, 8)):
        f, b, c = bench("ether", 4, -2.0, 0.0, set_tiles(E, w))
        print(f"  E={E:5d} warps={w}: fold {f:.3f}  backward {b:.3f}  ({c:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
