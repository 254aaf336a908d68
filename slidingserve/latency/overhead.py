"""A latency model plus a fixed host time per step: what a step costs a request's next token.

A step's token reaches the request a little after the forward pass ends: the host plans the
step before it and processes its output after it (on the CPU engine 0.5-2 ms a step, against
steps of 3-20 ms). A planner that sizes a step to fit a decode's slack with the forward pass
alone runs every paced decode that much late, every step. ``StepOverhead(base, s)`` predicts
``base`` + ``s`` for every batch shape; the simulator's planners use it with the planning time
the run's timing adds to each step, and the engine adapter's live model adds the host time it
measures (``engine.latency_source``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slidingserve.latency.base import LatencyModel
from slidingserve.latency.features import BatchShape


class StepOverhead:
    def __init__(self, base: LatencyModel, overhead_s: float):
        if not overhead_s >= 0:
            raise ValueError(f"step overhead must be >= 0 s (got {overhead_s!r})")
        self.base = base
        self.overhead_s = float(overhead_s)

    def predict(self, shape: BatchShape) -> float:
        return self.base.predict(shape) + self.overhead_s

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.base.predict_many(shapes) + self.overhead_s

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.base.predict_features(X) + self.overhead_s

    def __repr__(self) -> str:
        return f"StepOverhead({self.base!r}, {self.overhead_s})"
