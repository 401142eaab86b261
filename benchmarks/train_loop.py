"""Speed of the training scripts themselves: ms per optimiser step and the GPU-busy part of it, on one GPU.

    python benchmarks/train_loop.py                      # every row, writes results/train_loop_<GPU>.{json,md}
    python benchmarks/train_loop.py --rows dreambooth    # only the DreamBooth rows
    python benchmarks/train_loop.py --report             # rebuild the markdown table from the JSON

Runs `train_dreambooth` and `train_s2i` (the functions the scripts call) on an SD 1.5-architecture pipeline with
random weights, built here and saved as a diffusers folder (UNet, VAE and CLIP text encoder of SD 1.5's shapes, the
real CLIP tokenizer), in bf16 at 512 px, on the shipped DreamBooth dog (prior preservation: 100 ready-made class
images) and the shipped ADE20K pairs (copied to 64 samples). Validation and checkpoints are off; everything else is
the scripts' defaults (on one GPU: cached latents and the CUDA-graph step). ``eager`` rows turn both off
(``--cache_latents off --cuda_graph off``, no loader workers): the scripts' path before these defaults.

Per row, after ``--warmup`` steps: the loop's wall time in chunks of ``--chunk`` steps (the GPU is drained at each
chunk boundary, never inside one), the median chunk mean over all repeats is ``ms_per_step``; then ``--profile``
steps under torch.profiler give ``gpu_busy_ms``: the union of the intervals in which a kernel or copy ran, per step.
Rows run in turn, each in a fresh process (its peak memory is its own), and the whole list ``--repeats`` times
(reversed every other time), so drift hits all alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
DOG = REPO / "ether_diffusion" / "assets" / "dreambooth" / "dog"
ADE20K = REPO / "tests" / "assets" / "ade20k"

# stable-diffusion-v1-5 vae/config.json and text_encoder/config.json (architecture keys)
SD15_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, in_channels=3, out_channels=3, latent_channels=4,
                layers_per_block=2, norm_num_groups=32, sample_size=512, act_fn="silu")
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, layer_norm_eps=1e-5)

DREAMBOOTH = [("dreambooth", m, 1, prior, "default") for prior in (False, True) for m in ("ether", "ether_plus", "lora")]
DREAMBOOTH += [("dreambooth", "ether", 1, prior, "eager") for prior in (False, True)]
S2I = [("s2i", m, b, False, "default") for b in (4, 16) for m in ("none", "ether", "ether_plus", "lora")]
S2I += [("s2i", "ether", 4, False, "eager")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", choices=["all", "dreambooth", "s2i"], default="all")
    p.add_argument("--warmup", type=int, default=10, help="steps before timing (capture, allocator, cache)")
    p.add_argument("--chunk", type=int, default=10, help="steps per timed chunk")
    p.add_argument("--chunks", type=int, default=4, help="timed chunks per row and repeat")
    p.add_argument("--profile", type=int, default=5, help="profiled steps per row and repeat (GPU-busy time)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--workdir", default=None, help="where the random SD 1.5 folder and the data go (default: a temp dir)")
    p.add_argument("--out", default=None, help="result JSON (default: results/train_loop_<GPU>.json)")
    p.add_argument("--report", action="store_true", help="only rebuild the markdown table of --out")
    p.add_argument("--in-process", action="store_true",
                   help="run the rows in this process (default: each in a fresh one, so each peak is its own)")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # script:method:batch:prior:mode, one row
    return p.parse_args(argv)


# ------------------------------------------------------------------ inputs
def build_sd15_folder(folder: Path) -> Path:
    """A StableDiffusionPipeline of SD 1.5's shapes with random weights, saved (fp16) as a diffusers folder."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from ether_diffusion.models.tiny import SD_SCHEDULER
    from ether_diffusion.models.tokenizer import clip_tokenizer
    from ether_diffusion.models.unet_configs import SD15_UNET, build_unet

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    unet = build_unet(SD15_UNET, device=dev)
    torch.manual_seed(1)
    with torch.device(dev):
        vae = AutoencoderKL(**SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(str(folder))
    del pipe, unet, vae, text
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder


def class_images(folder: Path, n: int = 100, size: int = 512) -> Path:
    """``n`` smooth random images standing in for generated class images (their content does not change speed)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"class_{i:04d}.png"
        if not path.exists():
            blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(blocks).resize((size, size), Image.BILINEAR).save(path)
    return folder


def ade20k_copies(root: Path, copies: int = 16) -> tuple[Path, Path]:
    """The shipped validation pairs copied ``copies`` times under new names: (data root, captions JSONL)."""
    captions = root / "captions.jsonl"
    if captions.is_file():
        return root, captions
    lines = []
    shipped = [json.loads(line) for line in (ADE20K / "captions_oft_blip.jsonl").read_text().splitlines() if line]
    text = {Path(d["image"]).stem: d["prompt"] for d in shipped}
    for kind, suffix in (("images", ".jpg"), ("annotations", ".png")):
        (root / kind / "training").mkdir(parents=True, exist_ok=True)
    for src in sorted((ADE20K / "images" / "validation").glob("*.jpg")):
        for c in range(copies):
            name = f"ADE_train_{c:04d}{src.stem[-4:]}"
            shutil.copy(src, root / "images" / "training" / f"{name}.jpg")
            shutil.copy(ADE20K / "annotations" / "validation" / f"{src.stem}.png",
                        root / "annotations" / "training" / f"{name}.png")
            lines.append(json.dumps({"image": f"{name}.jpg", "prompt": text.get(src.stem) or "a room"}))
    captions.write_text("\n".join(lines) + "\n")
    return root, captions


# ------------------------------------------------------------------ timing
def gpu_busy_ms(prof, steps: int) -> float:
    """Union of the GPU intervals (kernels, copies, sets) in the profile, per step."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
    busy, end = 0.0, -1.0
    for a, b in spans:
        if a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    return busy / 1000 / steps


class StepTimer:
    """``on_step`` of the training functions: chunk timings after the warm-up, then a profiled window."""

    def __init__(self, args):
        self.args, self.chunks, self.prof, self.t0 = args, [], None, None
        self.timed_end = args.warmup + args.chunk * args.chunks
        self.busy = None

    @property
    def total_steps(self) -> int:
        return self.timed_end + self.args.profile

    def __call__(self, step: int) -> None:
        a = self.args
        if a.warmup <= step <= self.timed_end and (step - a.warmup) % a.chunk == 0:
            torch.cuda.synchronize()
            now = time.perf_counter()
            if self.t0 is not None:
                self.chunks.append(1000 * (now - self.t0) / a.chunk)
            self.t0 = now
        if step == self.timed_end:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            self.prof.start()
        if step == self.total_steps:
            torch.cuda.synchronize()
            self.prof.stop()
            self.busy = gpu_busy_ms(self.prof, a.profile)


def run_row(args, row, model: Path, work: Path) -> dict:
    from accelerate.state import AcceleratorState, GradientState

    script, method, batch, prior, mode = row
    timer = StepTimer(args)
    out = work / "runs" / f"{script}_{method}_{batch}_{prior}_{mode}"
    shutil.rmtree(out, ignore_errors=True)
    common = dict(pretrained_model_name_or_path=str(model), output_dir=str(out), method=method,
                  train_batch_size=batch, max_train_steps=timer.total_steps, mixed_precision="bf16",
                  report_to="none", seed=0, checkpointing_steps=10**9, resolution=args.resolution)
    if mode == "eager":
        common.update(cache_latents="off", cuda_graph="off", dataloader_num_workers=0)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    gc.collect()  # the previous row's pipeline, so the peak is this row's own
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_start = time.perf_counter()
    if script == "dreambooth":
        from ether_diffusion.dreambooth.config import DreamBoothConfig
        from ether_diffusion.dreambooth.train import train_dreambooth

        extra = dict(with_prior_preservation=True, class_prompt="a photo of dog", num_class_images=100,
                     class_data_dir=str(class_images(work / "class_dog", 100, args.resolution))) if prior else {}
        cfg = DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="a photo of sks dog", **common, **extra)
        train_dreambooth(cfg, on_step=timer)
    else:
        from ether_diffusion.s2i.config import S2IConfig
        from ether_diffusion.s2i.train import train_s2i

        root, captions = ade20k_copies(work / "ade20k")
        cfg = S2IConfig(data_root=str(root), captions=str(captions), validation_split=None,
                        latent_cache_dir=str(work / "latent_cache"), **common)
        train_s2i(cfg, on_step=timer)
    ms = statistics.median(timer.chunks)
    result = dict(script=script, method=method, batch=batch, prior_preservation=prior, mode=mode,
                  ms_per_step=round(ms, 2), gpu_busy_ms=round(timer.busy, 2), chunks_ms=[round(c, 2) for c in timer.chunks],
                  peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  run_s=round(time.perf_counter() - t_start, 1))
    print(f"  {script:10s} {method:10s} bs {batch:2d} prior {int(prior)} {mode:7s}: {ms:7.2f} ms/step, GPU busy "
          f"{timer.busy:7.2f} ms ({ms / timer.busy:.2f}x), peak {result['peak_gib']} GiB, run {result['run_s']} s",
          flush=True)
    return result


def merge(runs: list[dict]) -> list[dict]:
    """Rows repeated over the repeats -> one row each: the medians of all chunks and of the busy times."""
    keyed = {}
    for r in runs:
        keyed.setdefault((r["script"], r["method"], r["batch"], r["prior_preservation"], r["mode"]), []).append(r)
    rows = []
    for (script, method, batch, prior, mode), rs in keyed.items():  # noqa: B007
        chunks = [c for r in rs for c in r["chunks_ms"]]
        rows.append(dict(script=script, method=method, batch=batch, prior_preservation=prior, mode=mode,
                         ms_per_step=round(statistics.median(chunks), 2),
                         gpu_busy_ms=round(statistics.median(r["gpu_busy_ms"] for r in rs), 2),
                         peak_gib=max(r["peak_gib"] for r in rs), repeats=len(rs)))
    return rows


def combine(previous: dict, fresh: dict) -> dict:
    """``fresh`` rows replace those of the same scripts in ``previous``; the other scripts' rows and their
    provenance (``measurements``: ``[{"scripts", "date", "commit", "command"}]``), and the reference rows
    (`peak_reference.py`), stay."""
    scripts = set(fresh["measurements"][0]["scripts"])
    kept = lambda rows: [r for r in rows if r["script"] not in scripts]  # noqa: E731
    older = [dict(m, scripts=[s for s in m["scripts"] if s not in scripts]) for m in previous["measurements"]]
    return {**previous, "measurements": [m for m in older if m["scripts"]] + fresh["measurements"],
            **{k: kept(previous[k]) + fresh[k] for k in ("rows", "eager_rows", "runs")}}


def report(result: dict) -> str:
    lines = [f"# Training loop speed on {result['gpu']}", ""]
    for m in sorted(result["measurements"], key=lambda m: m["scripts"]):
        lines.append(f"- {', '.join(m['scripts'])} rows: {m['date']}, commit {m['commit']}: `{m['command']}`")
    lines += ["",
             "| script | batch | prior | method | path | ms / step | GPU busy ms | wall / busy | peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_script = lambda rows: sorted(rows, key=lambda r: r["script"])  # noqa: E731 - stable: methods keep their order
    for r in by_script(result["rows"]) + by_script(result.get("eager_rows", [])):
        lines.append(f"| {r['script']} | {r['batch']} | {'yes' if r['prior_preservation'] else 'no'} | {r['method']} | "
                     f"{r.get('mode', 'default')} | {r['ms_per_step']:.1f} | {r['gpu_busy_ms']:.1f} | "
                     f"{r['ms_per_step'] / r['gpu_busy_ms']:.2f} | {r.get('peak_gib') or '–'} |")
    if result.get("peak_note"):
        lines += ["", result["peak_note"]]
    if result.get("reference_rows"):
        commit = result["reference_rows"][0]["commit"]
        lines += ["", f"Peak memory of the same ETHER rows with the scripts at {commit}, before cached latents and CUDA-graph "
                  "steps (`benchmarks/peak_reference.py`):", "",
                  "| script | batch | prior | peak GiB before | peak GiB now (default path) |", "| --- | --- | --- | --- | --- |"]
        now = {(r["script"], r["batch"], r["prior_preservation"]): r.get("peak_gib") for r in result["rows"]
               if r["method"] == "ether"}
        for r in result["reference_rows"]:
            key = (r["script"], r["batch"], r["prior_preservation"])
            lines.append(f"| {r['script']} | {r['batch']} | {'yes' if key[2] else 'no'} | {r['peak_gib']} | "
                         f"{now.get(key) or '–'} |")
    return "\n".join(lines) + "\n"


def short_commit(folder: Path = REPO) -> str:
    """The commit checked out in ``folder`` (short hash), or 'unknown' outside a git checkout."""
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def read_result(path: Path) -> dict:
    """A result JSON, or one error line for a file that is not one (read before any row runs)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read the result file {path}: {e}")


def write_result(out: Path, result: dict, to_markdown) -> None:
    """``result`` as JSON at ``out`` and ``to_markdown(result)`` next to it (.md), each written whole."""
    from ether_diffusion.outputs import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(to_markdown(result)))


def run_isolated(argv, row, work: Path) -> dict:
    """``run_row`` in a fresh Python process; its result is the last line of its output."""
    import subprocess

    argv = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, __file__, *argv, "--workdir", str(work), "--row", ":".join(map(str, row))]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-800:]}")
    result = json.loads(lines[-1])
    print(f"  {row}: {result['ms_per_step']:.2f} ms/step, GPU busy {result['gpu_busy_ms']:.2f} ms, "
          f"peak {result['peak_gib']} GiB", flush=True)
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.row is not None:  # one row, in this process: the parent reads the JSON line
        script, method, batch, prior, mode = args.row.split(":")
        row = (script, method, int(batch), prior == "True", mode)
        print(json.dumps(run_row(args, row, Path(args.workdir) / "sd15_random", Path(args.workdir))), flush=True)
        return
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else RESULTS / f"train_loop_{gpu.replace(' ', '_')}.json"
    if args.report:
        if not out.is_file():
            sys.exit(f"error: no result file {out} (pass the JSON to rebuild with --out)")
        write_result(out, read_result(out), report)
        return
    if not torch.cuda.is_available():
        sys.exit("error: benchmarks/train_loop.py times the scripts on a CUDA GPU; none is visible")
    previous = read_result(out) if out.exists() else {}  # its other script's rows are kept
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="train_loop_"))
    t0 = time.perf_counter()
    model = build_sd15_folder(work / "sd15_random")
    print(f"random SD 1.5 folder ready in {time.perf_counter() - t0:.0f} s: {model}", flush=True)
    rows = {"all": DREAMBOOTH + S2I, "dreambooth": DREAMBOOTH, "s2i": S2I}[args.rows]
    runs = []
    for rep in range(args.repeats):
        for row in rows if rep % 2 == 0 else rows[::-1]:
            try:
                runs.append(run_row(args, row, model, work) if args.in_process else run_isolated(argv, row, work))
            except Exception as e:  # noqa: BLE001 - report the row and go on with the others
                print(f"  {row}: failed: {type(e).__name__}: {e}"[:500], flush=True)
    merged = merge(runs)
    scripts = sorted({row[0] for row in rows})
    measured = dict(scripts=scripts, date=time.strftime("%Y-%m-%d"), commit=short_commit(),
                    command="python benchmarks/train_loop.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    fresh = dict(gpu=gpu, measurements=[measured], rows=[r for r in merged if r["mode"] == "default"],
                 eager_rows=[r for r in merged if r["mode"] == "eager"], runs=runs)
    result = combine(previous, fresh) if previous.get("gpu") == gpu else fresh
    write_result(out, result, report)
    print(report(result))


if __name__ == "__main__":
    main()
