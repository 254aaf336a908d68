"""A latency model scaled by a constant: a slower (or faster) GPU running the same model.

``ScaledLatency(base, 2.0)`` predicts twice ``base``'s step time for every batch shape: the
simulator's stand-in for an older GPU generation in a heterogeneous fleet (``SimConfig.fleet``).
A replica plans with it and its steps are timed with it, so a slow replica's policy knows it
is slow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slidingserve.latency.base import LatencyModel
from slidingserve.latency.features import BatchShape


class ScaledLatency:
    def __init__(self, base: LatencyModel, factor: float):
        if not factor > 0:
            raise ValueError(f"latency scale factor must be > 0 (got {factor!r})")
        self.base = base
        self.factor = float(factor)

    def predict(self, shape: BatchShape) -> float:
        return self.factor * self.base.predict(shape)

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.factor * self.base.predict_many(shapes)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.factor * self.base.predict_features(X)

    def __repr__(self) -> str:
        return f"ScaledLatency({self.base!r}, {self.factor})"
