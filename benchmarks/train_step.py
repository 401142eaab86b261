"""Training-step cost of ETHER / ETHER+ against the frozen floor and PEFT's adapters (SD 1.5 UNet, one GPU).

    python benchmarks/train_step.py --batch 4                          # eager, every method, + inference column
    python benchmarks/train_step.py --batch 4 --mode compile --no-inference
    python benchmarks/train_step.py --batch 4 --mode graph --no-inference  # whole step in one CUDA graph
    python benchmarks/train_step.py --unet tiny --device cpu --batch 1 --steps 2 --repeats 1   # smoke run
    python benchmarks/train_step.py --report                           # rebuild results/train_step.md from JSONs

SD 1.5 UNet architecture with random weights (nothing downloaded): frozen base in bf16, adapter parameters in fp32,
bf16 autocast, 64x64 latents (512 px), 77x768 text states, MSE against random noise, AdamW step included (fused on
CUDA). Every row backpropagates to the input latents, so all rows do the floor's backward plus their adapter's; the
``floor`` row has no trainable parameter (no adapter can be cheaper). Methods are interleaved in blocks of
``--steps`` steps and repeated ``--repeats`` times; the median over all timed steps is quoted, with its ratio to the
floor of the same run. Peak memory: the step's peak allocation above what was resident before it, plus this model's
own parameters and optimiser state (what a process holding only this model would peak at).

``--mode graph`` captures each method's whole step (zero_grad, forward, backward, AdamW with ``capturable=True``)
in one CUDA graph and replays it: no host work per step, so the ratios show what each adapter costs the GPU. A
method whose step cannot be captured is reported with its error and left out.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import ether_diffusion as ed
from ether_diffusion.layer import IMPLS
from ether_diffusion.models.unet_configs import SD15_UNET, TINY_UNET, build_unet

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
DEFAULT_METHODS = ["floor", "ether:1", "ether:4", "ether:16", "ether_plus:1", "ether_plus:4", "ether_plus:16",
                   "oft:4", "naive:4", "peft_lora", "peft_oft", "peft_hra", "ether:4@act", "ether:4@torch",
                   "ether_plus:4@torch"]
RESULTS = Path(__file__).parent / "results"
START = time.perf_counter()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unet", choices=["sd15", "tiny"], default="sd15")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, nargs="+", default=[4])
    p.add_argument("--mode", choices=["eager", "compile", "graph"], default="eager")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                   help="floor | floor+fused_qkv (the frozen model after diffusers' fuse_qkv_projections) | "
                        f"METHOD:N_BLOCKS[@IMPL] (ours; IMPL one of {', '.join(IMPLS)}) | peft_lora | peft_oft | "
                        "peft_hra")
    p.add_argument("--steps", type=int, default=10, help="timed steps per block")
    p.add_argument("--repeats", type=int, default=3, help="interleaved blocks per method")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-inference", dest="inference", action="store_false")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after start: a method (not the floor) whose warm-up (compilation) has not begun by then is dropped "
                        "with a message, so a run under a time limit still times the ones warmed")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--report", action="store_true", help="only rebuild the markdown table from --out's JSONs")
    return p.parse_args(argv)


# ------------------------------------------------------------------ methods
def add_method(unet, name: str):
    """Put method ``name`` on ``unet`` (frozen); returns its trainable parameters (fp32)."""
    unet.requires_grad_(False)
    if name == "floor":
        return []
    if name == "floor+fused_qkv":  # the frozen model with diffusers' one-GEMM q/k/v (k/v) projections
        unet.fuse_qkv_projections()
        return []
    if name.startswith("peft_"):
        from peft import HRAConfig, LoraConfig, OFTConfig, inject_adapter_in_model

        config = {"peft_lora": lambda: LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                                  target_modules=TARGETS),
                  "peft_oft": lambda: OFTConfig(r=0, oft_block_size=32, target_modules=TARGETS),
                  "peft_hra": lambda: HRAConfig(r=8, target_modules=TARGETS)}[name]()
        inject_adapter_in_model(config, unet)
        params = [p for p in unet.parameters() if p.requires_grad]
        for p in params:
            p.data = p.data.float()
        return params
    spec, _, impl = name.partition("@")
    method, _, n = spec.partition(":")
    ed.apply_ether(unet, ed.EtherConfig(method, int(n or 4), init_seed=0))
    ed.set_impl(unet, impl or "auto")
    return ed.ether_parameters(unet)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ one batch size
def measure(args, base, batch: int, device, on_partial=None) -> dict:
    size = base.config.sample_size
    gen = torch.Generator(device).manual_seed(0)
    latents = torch.randn(batch, 4, size, size, device=device, generator=gen, dtype=torch.bfloat16)
    noise = torch.randn(latents.shape, device=device, generator=gen, dtype=torch.bfloat16)
    text = torch.randn(batch, 77, base.config.cross_attention_dim, device=device, generator=gen,
                       dtype=torch.bfloat16)
    t = torch.randint(0, 1000, (batch,), device=device, generator=gen)
    amp = torch.autocast(device.type, dtype=torch.bfloat16)

    graph = args.mode == "graph"
    if graph:  # the autocast cache must not outlive a captured region
        amp = torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    runs = {}
    for name in args.methods:
        unet = copy.deepcopy(base)
        params = add_method(unet, name)
        opt = torch.optim.AdamW(params, lr=1e-5, **adamw_options(device, graph)) if params else None
        fwd = torch.compile(unet) if args.mode == "compile" else unet
        x = latents.clone().requires_grad_()

        def step(fwd=fwd, opt=opt, x=x, amp=amp):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            x.grad = None
            with amp:
                loss = torch.nn.functional.mse_loss(fwd(x, t, text).sample.float(), noise.float())
            loss.backward()
            if opt is not None:
                opt.step()

        if graph:
            try:
                step = capture(step, device)
            except Exception as e:  # noqa: BLE001 - report and go on with the other methods
                print(f"  {name}: cannot be captured in a CUDA graph: {type(e).__name__}: {e}"[:400], flush=True)
                del unet, params, opt
                torch.cuda.empty_cache()
                continue
        runs[name] = dict(unet=unet, step=step, params=params, opt=opt, times=[])

    for name in list(runs):  # warm-up (and compilation), then one step alone for the memory peak
        r = runs[name]
        if name != "floor" and args.deadline is not None and time.perf_counter() - START > args.deadline:
            print(f"  {name}: dropped, --deadline {args.deadline:.0f} s passed before its warm-up", flush=True)
            del runs[name], r
            torch.cuda.empty_cache() if device.type == "cuda" else None
            continue
        sync(device)
        t0 = time.perf_counter()
        r["step"]()
        sync(device)
        r["first_step_s"] = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            r["step"]()
        sync(device)
        if device.type == "cuda" and not graph:
            state = [v for s in (r["opt"].state.values() if r["opt"] else []) for v in s.values()
                     if torch.is_tensor(v)]
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            r["step"]()
            sync(device)
            own = nbytes(list(r["unet"].parameters())) + nbytes(state)
            r["peak_gib"] = (torch.cuda.max_memory_allocated(device) - before + own) / 2**30
        print(f"  warm {name}: first step {r['first_step_s']:.1f} s", flush=True)

    for rep in range(args.repeats):  # interleaved blocks
        for name, r in runs.items():
            for _ in range(args.steps):
                sync(device)
                t0 = time.perf_counter()
                r["step"]()
                sync(device)
                r["times"].append(1000 * (time.perf_counter() - t0))
        print(f"  repeat {rep + 1}/{args.repeats}: " + ", ".join(
            f"{n} {statistics.median(r['times']):.1f}" for n, r in runs.items()), flush=True)
        if on_partial is not None:
            on_partial(dict(batch=batch, mode=args.mode, rows=summarise(runs), partial=rep + 1 < args.repeats))
    result = dict(batch=batch, mode=args.mode, rows=summarise(runs))
    if args.inference:
        result["inference"] = inference(args, base, runs, latents, t, text, amp, device)
    return result


def adamw_options(device, graph: bool) -> dict:
    """AdamW for every method alike: fused on CUDA (a launch per step, not per parameter), also capturable
    inside a CUDA graph."""
    if device.type != "cuda":
        return {}
    return {"fused": True, "capturable": True} if graph else {"fused": True}


def capture(step, device):
    """``step`` captured in one CUDA graph (after a warm-up on a side stream, as torch.cuda.graph requires);
    returns the replay."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g.replay


def summarise(runs: dict) -> dict:
    floor = statistics.median(runs["floor"]["times"]) if "floor" in runs else None
    floor_mem = runs.get("floor", {}).get("peak_gib")
    rows = {}
    for name, r in runs.items():
        ms = statistics.median(r["times"])
        rows[name] = dict(
            ms=round(ms, 2), ratio=round(ms / floor, 3) if floor else None,
            peak_gib=round(r["peak_gib"], 3) if "peak_gib" in r else None,
            mem_ratio=round(r["peak_gib"] / floor_mem, 3) if floor_mem and "peak_gib" in r else None,
            trainable=sum(p.numel() for p in r["params"]), first_step_s=round(r["first_step_s"], 2),
            spread_ms=[round(min(r["times"]), 2), round(max(r["times"]), 2)], n_steps=len(r["times"]))
    return rows


@torch.no_grad()
def inference(args, base, runs, latents, t, text, amp, device) -> dict:
    """One UNet forward (a sampling step) for the base model and our adapters, unmerged and merged."""
    models = {"base": base.eval()}
    for name in ("ether:4", "ether_plus:4"):
        if name in runs:
            models[f"{name} unmerged"] = runs[name]["unet"].eval()
            merged = copy.deepcopy(runs[name]["unet"])
            ed.merge_ether(merged)
            models[f"{name} merged"] = merged
    times = {k: [] for k in models}
    calls = {k: (lambda m=m: m(latents, t, text)) for k, m in models.items()}
    with torch.no_grad(), amp:
        for call in calls.values():
            call()  # the unmerged models fold W' here, once
        if args.mode == "graph":  # each forward in one CUDA graph: what remains is the GPU's work
            calls = {k: capture(call, device) for k, call in calls.items()}
        for _ in range(args.repeats * args.steps):  # one step of each model in turn: drift hits all alike
            for k, call in calls.items():
                sync(device)
                t0 = time.perf_counter()
                call()
                sync(device)
                times[k].append(1000 * (time.perf_counter() - t0))
    base_ms = statistics.median(times["base"])
    return {k: dict(ms=round(statistics.median(v), 2), ratio=round(statistics.median(v) / base_ms, 3))
            for k, v in times.items()}


# ------------------------------------------------------------------ report
def table(results: list[dict], gpu: str, unet: str = "SD 1.5") -> str:
    """One markdown table: rows = methods, columns = (batch, mode) ms and ratio to that run's floor."""
    results = sorted(results, key=lambda r: (r["batch"], r["mode"]))
    cols = [(r["batch"], r["mode"]) for r in results]
    names = list(dict.fromkeys(n for r in results for n in r["rows"]))
    head = ("| method | trainable | " + " | ".join(f"bs {b} {m} ms (x floor)" for b, m in cols)
            + " | peak GiB (x floor) |")
    lines = [f"Training step on {gpu} ({unet} UNet, bf16 autocast, AdamW; median ms, ratio to the floor of the "
             "same run; peak memory at bs 4 eager)", "", head, "|" + " --- |" * (len(cols) + 3)]
    for n in names:
        cells, train, mem = [], "", ""
        for r in results:
            row = r["rows"].get(n)
            cells.append(f"{row['ms']:.1f} ({row['ratio']:.2f}x)" if row and row["ratio"] else
                         (f"{row['ms']:.1f}" if row else "-"))
            if row:
                train = f"{row['trainable']:,}"
                # peak memory at bs 4 eager; from a labelled eager run ("eager run 1") only where "eager" lacks it
                if (row.get("peak_gib") and r["mode"].startswith("eager") and r["batch"] == 4
                        and (r["mode"] == "eager" or not mem)):
                    mem = f"{row['peak_gib']:.2f} ({row['mem_ratio']:.3f}x)"
        lines.append(f"| {n} | {train} | " + " | ".join(cells) + f" | {mem} |")
    inf = [r for r in results if r.get("inference")]
    if inf:
        lines += ["", "Sampling step (one UNet forward, no grad, bf16 autocast): median ms (x base)", "",
                  "| model | " + " | ".join(f"bs {r['batch']} {r['mode']}" for r in inf) + " |",
                  "|" + " --- |" * (len(inf) + 1)]
        for k in dict.fromkeys(k for r in inf for k in r["inference"]):
            lines.append(f"| {k} | " + " | ".join(
                f"{r['inference'][k]['ms']:.1f} ({r['inference'][k]['ratio']:.3f}x)" if k in r["inference"] else "-"
                for r in inf) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path) -> None:
    by_gpu: dict[str, list] = {}
    for f in sorted(out.glob("train_step_*.json")):
        data = json.loads(f.read_text())
        by_gpu.setdefault((data["gpu"], data["unet"]), []).extend(data["results"])
    for (gpu, unet), results in by_gpu.items():
        text = table(results, gpu, "SD 1.5" if unet == "sd15" else unet)
        (out / f"train_step_{gpu.replace(' ', '_')}_{unet}.md").write_text(text)
        print(text)


def main(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        write_report(out)
        return []
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base = build_unet(SD15_UNET if args.unet == "sd15" else TINY_UNET, device=device).to(torch.bfloat16)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: list[dict] = []
    tag = f"{gpu.replace(' ', '_')}_{args.unet}_{args.mode}_bs{'-'.join(map(str, args.batch))}"

    def save(partial=None):  # after every repeat, so a run cut short still leaves its numbers
        meta = dict(gpu=gpu, unet=args.unet, torch=torch.__version__, steps=args.steps, repeats=args.repeats,
                    warmup=args.warmup, results=results + ([partial] if partial else []))
        (out / f"train_step_{tag}.json").write_text(json.dumps(meta, indent=2))

    for batch in args.batch:
        print(f"batch {batch}, {args.mode}", flush=True)
        results.append(measure(args, base, batch, device, on_partial=save))
        save()
        torch.cuda.empty_cache() if device.type == "cuda" else None
    print(table(results, gpu, "SD 1.5" if args.unet == "sd15" else args.unet))
    return results


if __name__ == "__main__":
    main(parse_args())
