"""The bookkeeping a prepared model carries (``model._ether``), and the errors of using it wrongly.

A leaf of the core: the model-level verbs (``model``), the hooks diffusers and torch call (``hooks``), ``io``,
``export`` and ``analysis`` read the state through ``get_state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .config import EtherConfig

if TYPE_CHECKING:
    from .kernels import StepFold

STATE_ATTR = "_ether"


class EtherError(RuntimeError):
    """ETHER was used on a model in the wrong state (not applied, applied twice, already merged...)."""


class UnknownAdapterError(KeyError):
    """A named adapter that is not loaded (one line, without KeyError's quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ForwardCounter:
    """How many forwards a model has begun (its forward pre-hook counts): the step form's folded weights live for one."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass
class EtherState:
    config: EtherConfig
    layers: dict[str, tuple[int, int]]  # "<attn>.<projection>" -> (out_features, in_features)
    original_processors: dict  # attention module name -> the processor found at apply time
    processors: dict  # attention module name -> our EtherAttnProcessor
    requires_grad: dict[str, bool]  # base parameter name -> its flag before apply
    attentions: dict = field(default_factory=dict)  # attention module name -> the Attention module
    merged: bool = False
    # while merged: "<attn>.<projection>" -> {tensor name: the original tensor, on the CPU}, restored bit for bit
    saved_weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    forwards: ForwardCounter = field(default_factory=ForwardCounter)
    step_fold: StepFold | None = None  # shared by the processors where the step fold runs (ether / ether_plus, triton)


def get_state(model: nn.Module, required: bool = True) -> EtherState | None:
    state = getattr(model, STATE_ATTR, None)
    if state is None and required:
        raise EtherError("no ETHER adapter on this model; call apply_ether(model, config) or load_ether first")
    return state
