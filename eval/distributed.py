"""Spread a list of work items over the processes of an `accelerate launch`, or run it all here when not launched.

`map_chunks(items, fn)` gives this process its contiguous share (`PartialState.split_between_processes`), runs
`fn(share) -> list` and gathers every process's results (`gather_object`) back into the original order, on every
process. Without a launcher there is one process and this is just `fn(items)`. Launch with
`accelerate launch --multi_gpu --num_processes N -m eval ...` on GPUs, or `torchrun --nproc_per_node N -m eval ...`
(CPU ranks use gloo).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

T = TypeVar("T")
R = TypeVar("R")


def state() -> PartialState:
    """accelerate's process state; on a machine without CUDA (or with ACCELERATE_USE_CPU) ranks talk over gloo."""
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=cpu)


def pick_device(requested: str | None) -> torch.device:
    """`requested` if given, else this process's device (cuda:<local rank> when there are GPUs, else cpu)."""
    return torch.device(requested) if requested else state().device


def is_main() -> bool:
    return state().is_main_process


def map_chunks(items: Sequence[T], fn: Callable[[list[T]], list[R]]) -> list[R]:
    """[fn over this process's share of `items`] gathered from all processes, in the order of `items`."""
    items = list(items)
    st = state()
    if st.num_processes == 1:
        return fn(items)
    with st.split_between_processes(items) as share:
        mine = fn(list(share))
    if len(mine) != len(share):
        raise RuntimeError("map_chunks: fn must return one result per item")
    gathered = gather_object(mine)  # rank-ordered concatenation of contiguous shares
    return list(gathered)[: len(items)]
