"""Peak GPU memory of the training scripts at 56a9a4c, the last commit before cached latents and CUDA-graph steps:
the reference the ``peak_gib`` column of ``train_loop.py`` is held to (its ETHER rows, same model, data and settings).

    git worktree add /tmp/before 56a9a4c
    python benchmarks/peak_reference.py /tmp/before --workdir W --into benchmarks/results/train_loop_NVIDIA_H200.json

``W`` is a ``train_loop.py --workdir`` (the random SD 1.5 folder, class images and ADE20K copies are made there if
missing). Each row runs ``--steps`` optimiser steps in a fresh process importing the checkout's own code (its
``train_dreambooth`` / ``train_s2i`` API of that commit); ``torch.cuda.max_memory_allocated`` is its peak. ``--into``
adds the rows to a ``train_loop.py`` result as ``reference_rows`` and rebuilds its markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = [("dreambooth", 1, False), ("dreambooth", 1, True), ("s2i", 4, False), ("s2i", 16, False)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", help="a checkout of 56a9a4c")
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--into", default=None, help="a train_loop.py result JSON to add the rows to")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # script:batch:prior, one row in this process
    return p.parse_args(argv)


def run_row(args, script: str, batch: int, prior: bool) -> dict:
    """One row with the checkout's code (already first on sys.path)."""
    import torch

    work = Path(args.workdir).resolve()
    common = dict(pretrained_model_name_or_path=str(work / "sd15_random"), method="ether", train_batch_size=batch,
                  max_train_steps=args.steps, mixed_precision="bf16", report_to="none", seed=0,
                  checkpointing_steps=10**9, resolution=512, overwrite_output_dir=True,
                  output_dir=str(work / "reference_runs" / f"{script}_{batch}_{prior}"))
    torch.cuda.reset_peak_memory_stats()
    if script == "dreambooth":
        from ether_diffusion.training.dreambooth import train_dreambooth
        from ether_diffusion.training.dreambooth_config import DreamBoothConfig

        dog = Path(args.checkout) / "tests" / "assets" / "dreambooth" / "dog"
        extra = dict(with_prior_preservation=True, class_prompt="a photo of dog", num_class_images=100,
                     class_data_dir=str(work / "class_dog")) if prior else {}
        train_dreambooth(DreamBoothConfig(instance_data_dir=str(dog), instance_prompt="a photo of sks dog",
                                          **common, **extra))
    else:
        from ether_diffusion.s2i.config import S2IConfig
        from ether_diffusion.s2i.train import train_s2i

        train_s2i(S2IConfig(data_root=str(work / "ade20k"), captions=str(work / "ade20k" / "captions.jsonl"),
                            validation_split=None, **common))
    return dict(script=script, method="ether", batch=batch, prior_preservation=prior, mode="before",
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.row is not None:
        sys.path.insert(0, str(Path(args.checkout).resolve()))
        script, batch, prior = args.row.split(":")
        print(json.dumps(run_row(args, script, int(batch), prior == "True")), flush=True)
        return
    if not (Path(args.checkout) / "ether_diffusion" / "training" / "dreambooth.py").is_file():
        sys.exit(f"error: {args.checkout!r} is not a checkout of 56a9a4c (no ether_diffusion/training/dreambooth.py); "
                 "git worktree add /tmp/before 56a9a4c")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_loop

    into = train_loop.read_result(Path(args.into)) if args.into else None  # a bad file fails before the runs
    work = Path(args.workdir)
    train_loop.build_sd15_folder(work / "sd15_random")
    train_loop.class_images(work / "class_dog", 100)
    train_loop.ade20k_copies(work / "ade20k")
    commit = train_loop.short_commit(Path(args.checkout))
    rows = []
    for script, batch, prior in ROWS:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                               "--row", f"{script}:{batch}:{prior}"], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"  {script} bs {batch} prior {prior}: failed: {done.stderr[-600:]}", flush=True)
            continue
        rows.append({**json.loads(lines[-1]), "commit": commit})
        print(f"  {script} bs {batch} prior {prior}: peak {rows[-1]['peak_gib']} GiB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if into is not None:
        train_loop.write_result(Path(args.into), {**into, "reference_rows": rows}, train_loop.report)
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
