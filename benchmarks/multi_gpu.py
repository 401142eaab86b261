"""Two GPUs against one, through `accelerate launch` (DDP): S2I training throughput and loss curve, and the DreamBooth
evaluation split over processes.

    python benchmarks/multi_gpu.py                  # needs 2 CUDA devices; writes results/multi_gpu_<GPU>.{json,md}
    python benchmarks/multi_gpu.py --part train     # only the S2I runs
    python benchmarks/multi_gpu.py --part eval      # only the evaluation runs

Training: each run is `accelerate launch --num_processes N [--multi_gpu]` of this file in worker mode, which calls
`train_s2i` (what `scripts/train_s2i.py` calls) with ETHER n=4, bf16, 512 px, on `train_loop.py`'s random SD 1.5
folder and ADE20K copies (the latent cache folder built once and shared):
- throughput: 1 GPU x batch 16 (its default path: CUDA-graph step; and with ``--cuda_graph off``, the step DDP runs)
  and 2 GPUs x batch 16 each; ms per optimiser step = median of ``--chunk``-step chunks after ``--warmup`` steps;
  speed-up = images per second with 2 GPUs over 1 GPU (target >= 1.8);
- loss curve: 1 GPU x batch 32 and 2 GPUs x batch 16, the first ``--curve_steps`` logged losses (``logging_steps 1``;
  under DDP the logged loss is the mean over processes). Both draw the same samples and noise (`loss.Shard`).
Evaluation: ``--images`` synthetic generated images (30 subjects x 25 prompts x 4 seeds by default, the DreamBooth
benchmark's 3,000) and 5 real images per subject; `python -m eval dreambooth --random-init` (random small encoders:
the split and gather are what is measured) with 1 and 2 processes; the means and the wall time of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import train_loop  # this folder: the random SD 1.5 folder, the ADE20K copies, result files

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["all", "train", "eval"], default="all")
    p.add_argument("--workdir", default=None, help="model, data and runs (default: a temp dir)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--curve_steps", type=int, default=20)
    p.add_argument("--images", type=int, default=3000, help="generated images to evaluate (30 subjects x 25 prompts)")
    p.add_argument("--out", default=None, help="result JSON (default: results/multi_gpu_<GPU>.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one training run, under accelerate launch
    return p.parse_args(argv)


# ------------------------------------------------------------------ worker (one process of a launched run)
def worker(spec: dict) -> None:
    import torch
    from accelerate import Accelerator

    from ether_diffusion.s2i.config import S2IConfig
    from ether_diffusion.s2i.train import train_s2i

    losses, chunks, t0 = {}, [], [None]
    log = Accelerator.log

    def recording_log(self, values, step=None, log_kwargs=None):  # the values the loop logs, per step
        if "loss" in values:
            losses[step] = float(values["loss"])
        return log(self, values, step=step, log_kwargs=log_kwargs or {})

    Accelerator.log = recording_log

    def on_step(step: int) -> None:
        w, c = spec["warmup"], spec["chunk"]
        if step >= w and (step - w) % c == 0:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now = time.perf_counter()
            if t0[0] is not None:
                chunks.append(1000 * (now - t0[0]) / c)
            t0[0] = now

    work = Path(spec["workdir"])
    cfg = S2IConfig(pretrained_model_name_or_path=spec["model"], data_root=str(work / "ade20k"),
                    captions=str(work / "ade20k" / "captions.jsonl"), validation_split=None,
                    latent_cache_dir=str(work / "latent_cache"), output_dir=str(work / "runs" / spec["name"]),
                    overwrite_output_dir=True, method="ether", train_batch_size=spec["batch"],
                    max_train_steps=spec["steps"], mixed_precision="bf16", report_to="none", seed=0,
                    checkpointing_steps=10**9, resolution=spec["resolution"], logging_steps=spec["logging_steps"],
                    cuda_graph=spec["cuda_graph"])
    train_s2i(cfg, on_step=on_step)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        Path(spec["result"]).write_text(json.dumps({"chunks_ms": chunks, "losses": losses}))


# ------------------------------------------------------------------ parent
def accelerate_launch(processes: int, mixed_precision: str) -> list[str]:
    """The `accelerate launch` command line up to the script, for ``processes`` processes on this host."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            *(["--multi_gpu"] if processes > 1 else [])]


def launch(args, work: Path, name: str, processes: int, batch: int, steps: int, logging_steps: int,
           cuda_graph: str = "auto", model: str | None = None, resolution: int = 512) -> dict:
    result = work / "results" / f"{name}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    spec = dict(name=name, workdir=str(work), model=model or str(work / "sd15_random"), resolution=resolution, batch=batch, steps=steps, logging_steps=logging_steps,
                cuda_graph=cuda_graph, warmup=args.warmup, chunk=args.chunk, result=str(result))
    command = [*accelerate_launch(processes, "bf16"), __file__, "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    if done.returncode != 0:
        raise RuntimeError(f"{name}: exit {done.returncode}: {done.stderr[-1500:]}")
    out = json.loads(result.read_text())
    out.update(name=name, processes=processes, batch_per_process=batch, cuda_graph=cuda_graph,
               run_s=round(time.perf_counter() - t0, 1))
    if out["chunks_ms"]:
        out["ms_per_step"] = round(statistics.median(out["chunks_ms"]), 2)
        out["images_per_s"] = round(1000 * processes * batch / out["ms_per_step"], 1)
    print(f"  {name}: {out.get('ms_per_step', '-')} ms/step, {out.get('images_per_s', '-')} images/s "
          f"({out['run_s']} s)", flush=True)
    return out


def train_part(args, work: Path) -> dict:
    train_loop.build_sd15_folder(work / "sd15_random")
    train_loop.ade20k_copies(work / "ade20k")
    timed = args.warmup + args.chunk * args.chunks
    runs = [launch(args, work, "1gpu_bs16", 1, 16, timed, 10),
            launch(args, work, "1gpu_bs16_eager", 1, 16, timed, 10, cuda_graph="off"),
            launch(args, work, "2gpu_bs16", 2, 16, timed, 10),
            launch(args, work, "curve_1gpu_bs32", 1, 32, args.curve_steps, 1),
            launch(args, work, "curve_2gpu_bs16", 2, 16, args.curve_steps, 1)]
    by = {r["name"]: r for r in runs}
    one, one_eager, two = by["1gpu_bs16"], by["1gpu_bs16_eager"], by["2gpu_bs16"]
    a, b = by["curve_1gpu_bs32"]["losses"], by["curve_2gpu_bs16"]["losses"]
    steps = sorted(set(a) & set(b), key=int)
    return dict(runs=runs, speedup=round(two["images_per_s"] / one["images_per_s"], 3),
                speedup_vs_eager=round(two["images_per_s"] / one_eager["images_per_s"], 3),
                curve_max_abs_diff=max(abs(a[s] - b[s]) for s in steps), curve_steps=len(steps))


def synthetic_dreambooth(root: Path, images: int) -> tuple[Path, Path]:
    """``images`` generated images over 30 subjects x 25 prompts (manifest.jsonl) and 5 real images per subject."""
    import numpy as np
    from PIL import Image

    gen, real = root / "generated", root / "real"
    if (gen / "manifest.jsonl").is_file():
        return gen, real
    rng = np.random.default_rng(0)
    image = lambda: Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((256, 256))  # noqa: E731
    subjects, prompts = 30, 25
    per_prompt = max(1, images // (subjects * prompts))
    rows = []
    (gen / "ether").mkdir(parents=True, exist_ok=True)
    for s in range(subjects):
        subject = f"subject{s:02d}"
        (real / subject).mkdir(parents=True, exist_ok=True)
        for k in range(5):
            image().save(real / subject / f"{k:02d}.jpg", quality=95)
        for p in range(prompts):
            for seed in range(per_prompt):
                name = f"ether/{subject}_{p:02d}_{seed}.png"
                image().save(gen / name)
                rows.append({"path": name, "prompt": f"a {subject} number {p}", "seed": seed, "method": "ether",
                             "subject": subject, "prompt_index": p})
    (gen / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return gen, real


def eval_part(args, work: Path) -> dict:
    gen, real = synthetic_dreambooth(work / "dreambooth_eval", args.images)
    runs = {}
    for processes in (1, 2):
        out = work / "eval" / f"{processes}proc"
        command = [*accelerate_launch(processes, "no"), "-m", "eval", "dreambooth", "--generated", str(gen),
                   "--real", str(real), "--random-init", "--reuse", "false", "--out", str(out)]
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"eval with {processes} processes: exit {done.returncode}: {done.stderr[-1500:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        runs[processes] = dict(processes=metrics["processes"], wall_s=round(time.perf_counter() - t0, 1),
                               means=metrics["results"]["ether"]["means"], pairs=metrics["results"]["ether"]["pairs"])
        print(f"  eval, {processes} process(es): {runs[processes]['wall_s']} s, {runs[processes]['means']}", flush=True)
    diffs = {k: abs(runs[2]["means"][k] - v) / max(abs(v), 1e-12) for k, v in runs[1]["means"].items()}
    return dict(images=sum(1 for _ in open(gen / "manifest.jsonl")), runs=[runs[1], runs[2]],
                max_rel_diff=max(diffs.values()), same_pairs=runs[1]["pairs"] == runs[2]["pairs"])


def report(result: dict) -> str:
    lines = [f"# Two GPUs against one on {result['gpu']}", "", f"{result['date']}, commit {result['commit']}: "
             f"`{result['command']}`", ""]
    if "train" in result:
        t = result["train"]
        lines += ["| S2I ETHER run | processes | batch per process | ms / step | images / s |", "| --- | --- | --- | --- | --- |"]
        for r in t["runs"]:
            if "ms_per_step" in r:
                lines.append(f"| {r['name']} | {r['processes']} | {r['batch_per_process']} | {r['ms_per_step']} | "
                             f"{r['images_per_s']} |")
        lines += ["", f"Speed-up 2 GPUs / 1 GPU: {t['speedup']}x (against 1 GPU without the CUDA graph: "
                  f"{t['speedup_vs_eager']}x). Loss curve, 2 GPUs x 16 against 1 GPU x 32 over {t['curve_steps']} "
                  f"steps: largest difference {t['curve_max_abs_diff']:.2e}.", ""]
    if "eval" in result:
        e = result["eval"]
        lines += [f"DreamBooth eval of {e['images']} images: 1 process {e['runs'][0]['wall_s']} s, 2 processes "
                  f"{e['runs'][1]['wall_s']} s; largest relative difference of the means {e['max_rel_diff']:.1e}; "
                  f"same pairs: {e['same_pairs']}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return
    import torch

    if torch.cuda.device_count() < 2:
        sys.exit(f"error: benchmarks/multi_gpu.py needs 2 CUDA devices; {torch.cuda.device_count()} visible")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="multi_gpu_"))
    gpu = torch.cuda.get_device_name()
    result = dict(gpu=gpu, date=time.strftime("%Y-%m-%d"), commit=train_loop.short_commit(),
                  command="python benchmarks/multi_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.part in ("all", "train"):
        result["train"] = train_part(args, work)
    if args.part in ("all", "eval"):
        result["eval"] = eval_part(args, work)
    out = Path(args.out) if args.out else RESULTS / f"multi_gpu_{gpu.replace(' ', '_')}.json"
    train_loop.write_result(out, result, report)
    print(report(result))


if __name__ == "__main__":
    main()
