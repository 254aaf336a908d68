"""Profiling a real vLLM engine: a recording scheduler, the step-shape extraction it uses, and
the designed sweep of batch mixes that ``python -m predictor.profile`` drives through it."""

from predictor.profiling.shape import ScheduledItem, shape_of_step
from predictor.profiling.sweep import Scenario, SweepConfig, design_sweep

__all__ = ["Scenario", "ScheduledItem", "SweepConfig", "design_sweep", "shape_of_step"]
