"""The paper's study plots (matplotlib PNG): distance vs learning rate, metric vs learning rate, HE over training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _by_method(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["learning_rate"]):
        out.setdefault(r["method"], []).append(r)
    return out


def _vs_lr(ax, groups, value, ylabel, title):
    for method, rs in groups.items():
        pts = [(r["learning_rate"], value(r)) for r in rs if value(r) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_study(doc: dict, out: str | Path) -> list[Path]:
    """Write ``distance_vs_lr.png``, ``metrics_vs_lr.png`` (when metrics exist) and ``he_over_training.png``."""
    out = Path(out)
    groups = _by_method(doc["runs"])
    subtitle = f"{doc['model']} / {doc['subject']}"
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _vs_lr(axes[0], groups, lambda r: r["final"]["transform_dist"], "sum of ||H - I||_F",
           f"distance of the transform from I ({subtitle})")
    _vs_lr(axes[1], groups, lambda r: r["final"]["weight_dist"], "sum of ||W' - W||_F",
           "distance of the weights from the pretrained ones")
    axes[1].set_yscale("log")
    fig.tight_layout()
    paths.append(out / "distance_vs_lr.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    keys = [k for k in ("dino", "clip_i", "clip_t", "lpips") if any(k in r.get("metrics", {}) for r in doc["runs"])]
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
        for ax, k in zip(axes[0], keys):
            _vs_lr(ax, groups, lambda r, k=k: r.get("metrics", {}).get(k), k, f"{k} vs learning rate")
        fig.tight_layout()
        paths.append(out / "metrics_vs_lr.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    lrs = sorted({r["learning_rate"] for r in doc["runs"]})
    fig, axes = plt.subplots(1, len(lrs), figsize=(4.2 * len(lrs), 3.8), squeeze=False)
    for ax, lr in zip(axes[0], lrs):
        for method, rs in groups.items():
            for r in rs:
                if r["learning_rate"] == lr:
                    t = r["trajectory"]
                    ax.plot([p["step"] for p in t], [p["he"] - p["he_base"] for p in t], marker=".", label=method)
        ax.set_title(f"lr {lr:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("HE(W') - HE(W)")
        ax.legend(fontsize=8)
    fig.suptitle(f"hyperspherical energy over training ({subtitle})")
    fig.tight_layout()
    paths.append(out / "he_over_training.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
