"""The paper's learning-rate robustness and distance study (Sec. 4, Figs. 4-7) as a tool."""

from .robustness import StudyConfig, run_study

__all__ = ["StudyConfig", "run_study"]
