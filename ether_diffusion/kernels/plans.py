"""Which plan folds a set of layers: two-sided (ETHER+, ``twosided.TwoSidedPlan``) when they carry output-side
parameters, else one-sided (ETHER, ``grouped.Plan``)."""

from __future__ import annotations

from .grouped import Plan
from .twosided import TwoSidedPlan


def make_plan(weights: list, prm: list[tuple], n: int):
    """The plan for these layers (``prm[l]`` = (u_in, v_in, u_out, v_out), None where absent)."""
    return TwoSidedPlan(weights, prm, n) if prm[0][2] is not None else Plan(weights, prm, n)
