"""Serving many subjects from one UNet: a mixed-subject batch against subject-by-subject generation with merging.

    python benchmarks/mixed_batch.py                       # SD 1.5 UNet architecture (random weights), GPU, bf16
    python benchmarks/mixed_batch.py --unet tiny --device cpu --steps 2 --repeats 1   # smoke run

Times the denoising loop (DDIM, classifier-free guidance: the UNet batch is twice the prompts). Text encoding and VAE
decoding are the same work in every mode and are left out. Modes, interleaved and repeated (medians quoted):
- ``mixed``: 8 prompts, 8 different adapters, one batch (``cross_attention_kwargs={"ether_adapters": [...]}``),
  the default inference form: each sample's folded weight, built in every step, one batched matmul per projection;
- ``mixed_act``: the same with ``mixed_form="act"`` (per-sample maps on the activations, no weight copies);
- ``sequential``: per subject, set the adapter, merge, generate its prompt alone, unmerge (what a merged-only
  deployment does);
- ``single``: the same batch of 8 with one adapter for all, unmerged (the per-step reference for ``mixed``);
- ``merged``: the same batch of 8 with one adapter merged (= the base model's speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler

import ether_diffusion as ed
from ether_diffusion.models.tiny import SD_SCHEDULER
from ether_diffusion.models.unet_configs import SD15_UNET, TINY_UNET, build_unet


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unet", choices=["sd15", "tiny"], default="sd15")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--method", default="ether")
    p.add_argument("--n_blocks", type=int, default=4)
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--steps", type=int, default=25, help="sampling steps per generation")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--profile", action="store_true",
                   help="instead: per mode, GPU-busy ms per step, launches per step and the top kernels (torch.profiler)")
    return p.parse_args(argv)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def denoise(unet, scheduler, text, steps, adapters=None, guidance=7.5):
    """The pipeline's loop: text (2B, 77, C) = [uncond; cond]; returns the final latents (B, 4, h, w)."""
    B = text.shape[0] // 2
    size = unet.config.sample_size
    latents = torch.randn(B, 4, size, size, device=text.device, dtype=text.dtype)
    scheduler.set_timesteps(steps)
    kwargs = {"ether_adapters": adapters} if adapters is not None else None
    for t in scheduler.timesteps:
        noise = unet(torch.cat([latents] * 2), t, text, cross_attention_kwargs=kwargs).sample
        uncond, cond = noise.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    return latents


def main(args) -> dict:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    unet = build_unet(SD15_UNET if args.unet == "sd15" else TINY_UNET, device=device).to(dtype).eval()
    cfg = ed.EtherConfig(args.method, args.n_blocks)
    names = [f"subject{i}" for i in range(args.subjects)]
    ed.apply_ether(unet, cfg)
    state = ed.state.get_state(unet)
    for i, name in enumerate(names):  # every subject its own random adapter
        for proc in state.processors.values():
            proc.add_adapter(name, torch.Generator().manual_seed(i))
            proc.adapters[name].to(device)
    for proc in state.processors.values():
        proc.active = names[0]
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    C = unet.config.cross_attention_dim
    text = torch.randn(2 * args.subjects, 77, C, device=device, dtype=dtype)
    text_one = torch.randn(2, 77, C, device=device, dtype=dtype)

    def mixed():
        denoise(unet, scheduler, text, args.steps, adapters=names)

    def mixed_act():
        ed.set_mixed_form(unet, "act")
        try:
            denoise(unet, scheduler, text, args.steps, adapters=names)
        finally:
            ed.set_mixed_form(unet, "fold")

    def single():
        denoise(unet, scheduler, text, args.steps)

    def merged():
        ed.merge_ether(unet)
        try:
            denoise(unet, scheduler, text, args.steps)
        finally:
            ed.unmerge_ether(unet)

    def sequential():
        for name in names:
            ed.set_active_adapter(unet, name)
            ed.merge_ether(unet)
            denoise(unet, scheduler, text_one, args.steps)
            ed.unmerge_ether(unet)
        ed.set_active_adapter(unet, names[0])

    modes = {"mixed": mixed, "mixed_act": mixed_act, "sequential": sequential, "single": single, "merged": merged}
    for fn in modes.values():  # warm-up
        fn()
    if args.profile:
        return profile_modes(modes, args.steps, device)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m, fn in modes.items():  # interleaved
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "gpu": gpu, "unet": args.unet, "dtype": args.dtype, "method": args.method, "n_blocks": args.n_blocks,
        "subjects": args.subjects, "steps": args.steps, "repeats": args.repeats,
        "seconds": {m: round(v, 4) for m, v in med.items()}, "all_seconds": times,
        "images_per_s": {m: round(args.subjects / v, 3) for m, v in med.items()},
        "ms_per_step": {m: round(1000 * v / (args.steps * (args.subjects if m == "sequential" else 1)), 2)
                        for m, v in med.items()},
        "speedup_mixed_vs_sequential": round(med["sequential"] / med["mixed"], 3),
        "mixed_step_vs_single_step": round(med["mixed"] / med["single"], 3),
        "mixed_step_vs_merged_step": round(med["mixed"] / med["merged"], 3),
        "mixed_act_step_vs_single_step": round(med["mixed_act"] / med["single"], 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = gpu.replace(" ", "_")
    (out / f"mixed_batch_{args.unet}_{tag}.json").write_text(json.dumps(result, indent=2))
    table = [f"Mixed-subject batch on {gpu} ({args.unet} UNet, {args.dtype}, {args.method} n_blocks={args.n_blocks}, "
             f"{args.subjects} prompts x {args.subjects} subjects, {args.steps} DDIM steps with CFG, "
             f"median of {args.repeats} interleaved runs)", "",
             "| mode | s per batch of prompts | images/s | ms per UNet step |", "| --- | --- | --- | --- |"]
    table += [f"| {m} | {med[m]:.3f} | {result['images_per_s'][m]:.2f} | {result['ms_per_step'][m]:.1f} |"
              for m in modes]
    table += ["", f"mixed vs sequential: **{result['speedup_mixed_vs_sequential']:.2f}x** faster; "
              f"mixed step / single-adapter step: **{result['mixed_step_vs_single_step']:.3f}**; "
              f"mixed step / merged step: {result['mixed_step_vs_merged_step']:.3f}; "
              f"mixed_act step / single-adapter step: {result['mixed_act_step_vs_single_step']:.3f}"]
    (out / f"mixed_batch_{args.unet}_{tag}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return result


def profile_modes(modes: dict, steps: int, device) -> dict:
    """Where each mode's step goes: wall vs GPU-busy time (a host-bound step has GPU-busy << wall), top kernels."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for m in ("mixed", "single", "merged"):
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            modes[m]()
            sync(device)
            wall = time.perf_counter() - t0
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1000
        by_name: dict[str, float] = {}
        for e in kernels:
            by_name[e.name[:90]] = by_name.get(e.name[:90], 0.0) + e.device_time / 1000
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:10]
        out[m] = dict(wall_ms_per_step=1000 * wall / steps, gpu_busy_ms_per_step=busy / steps,
                      launches_per_step=len(kernels) / steps)
        print(f"{m}: wall {1000 * wall / steps:.1f} ms/step, GPU-busy {busy / steps:.1f} ms/step, "
              f"{len(kernels) / steps:.0f} launches/step")
        for name, ms in top:
            print(f"    {ms / steps:7.2f} ms/step  {name}")
    return out


if __name__ == "__main__":
    main(parse_args())
