"""A whole optimiser step (forward, loss, backward, clipping, AdamW) replayed from a CUDA graph.

An eager SD 1.5 step at batch 1 is bound by the host: the GPU waits while Python launches ~3,000 kernels. Captured
once, the same kernels replay with a single launch. `GraphedStep` wraps a step function ``step(inputs) -> outputs``
(``inputs``: a dict of device tensors and Python ints; ``outputs``: a dict of tensors) and, per input signature
(names, shapes, dtypes, int values):

1. runs the first ``warmup`` calls eagerly on a side stream (real training steps: lazy initialisation, cuBLAS
   handles and Triton compilation happen here, as `torch.cuda.graph` requires);
2. captures the next call into a graph whose inputs are static copies of ``inputs``;
3. afterwards copies ``inputs`` into the static tensors and replays.

Replays run the kernels the eager call ran, on the same parameter and optimiser-state tensors, so eager and graphed
steps interleave freely (a last, smaller batch runs eagerly under its own signature until it is seen ``warmup``
times). The step must be free of host syncs and of Python decisions that depend on tensor values; randomness is drawn
outside it (the inputs carry the noise). The optimiser needs ``capturable=True`` and tensor learning rates
(`training.optim`). Returned tensors belong to the graph: the next replay overwrites them, so callers copy what they
keep.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

Inputs = dict[str, "torch.Tensor | int"]
Outputs = dict[str, torch.Tensor]


def signature(inputs: Inputs) -> tuple:
    """What a captured graph is specialised to: every name with its shape and dtype (tensors) or value (ints)."""
    return tuple((k, tuple(v.shape), v.dtype) if torch.is_tensor(v) else (k, v) for k, v in sorted(inputs.items()))


class GraphedStep:
    """``step`` captured in one CUDA graph per input signature; see the module docstring."""

    def __init__(self, step: Callable[[Inputs], Outputs], device: torch.device, warmup: int = 2):
        self.step, self.device, self.warmup = step, torch.device(device), warmup
        self.seen: Counter = Counter()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Inputs, Outputs]] = {}
        self.side = torch.cuda.Stream(self.device)
        self.pool = None  # one memory pool for every graph of this step

    def __call__(self, inputs: Inputs) -> Outputs:
        key = signature(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            self.seen[key] += 1
            if self.seen[key] <= self.warmup:
                return self._on_side_stream(inputs)
            entry = self.graphs[key] = self._capture(inputs)
            graph, _, outputs = entry
            graph.replay()  # capture records without running: this call's step happens here
            return outputs
        graph, static, outputs = entry
        for k, v in inputs.items():
            if torch.is_tensor(v):
                static[k].copy_(v, non_blocking=True)
        graph.replay()
        return outputs

    def _on_side_stream(self, inputs: Inputs) -> Outputs:
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            out = self.step(inputs)
        main.wait_stream(self.side)
        for v in inputs.values():  # tensors made on the main stream, used on the side stream
            if torch.is_tensor(v):
                v.record_stream(self.side)
        # ``out`` is read on the main stream; its blocks need no record there: the side stream only runs after
        # waiting for the main one, and the graphs allocate from their own pool
        return out

    def _capture(self, inputs: Inputs) -> tuple[torch.cuda.CUDAGraph, Inputs, Outputs]:
        static = {k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()}
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # on the warm-up stream: a stream of its own would hold one more set of cuBLAS workspaces
        with torch.cuda.graph(graph, pool=self.pool, stream=self.side):
            outputs = self.step(static)
        self.pool = graph.pool()
        return graph, static, outputs
