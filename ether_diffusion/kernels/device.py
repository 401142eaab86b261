"""Where the Triton forms can run, in which dtype a layer computes, and each method's map coefficients: the leaf every
kernel module imports."""

from __future__ import annotations

import importlib.util
import os

import torch

# y_i = x_i + su (x_i·û_i) û_i + sv (x_i·v̂_i) v̂_i per block (``triton_reflect``): the methods the kernels cover
SIGNS = {"ether": (-2.0, 0.0), "ether_plus": (-1.0, 1.0)}
TRITON_METHODS = tuple(SIGNS)

_TRITON: bool | None = None
# under triton's CPU interpreter (tests), CPU tensors count as devices for the Triton forms
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    """Whether the Triton forms can run here (triton importable and a CUDA device present)."""
    global _TRITON
    if _TRITON is None:
        _TRITON = importlib.util.find_spec("triton") is not None and (torch.cuda.is_available() or _INTERPRET)
    return _TRITON


def on_device(x: torch.Tensor) -> bool:
    """Whether ``x`` lives where the Triton kernels run (CUDA, or anywhere under triton's CPU interpreter)."""
    return x.is_cuda or _INTERPRET


is_compiling = torch.compiler.is_compiling  # (called per projection: no wrapper)


def autocast_dtype(t: torch.Tensor, default: torch.dtype | None = None) -> torch.dtype:
    """The dtype a layer computes in on ``t``'s device: autocast's while it is on, else ``default`` (t's own)."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else (default or t.dtype)
