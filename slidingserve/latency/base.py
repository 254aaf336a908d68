"""The latency-model protocol every planner uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from slidingserve.latency.features import BatchShape


@runtime_checkable
class LatencyModel(Protocol):
    """Predicts the wall time of one engine step.

    ``predict_features`` is the hot path: it takes the (n, N_FEATURES) matrix built by
    ``slidingserve.latency.features`` and must be vectorised. ``predict`` and ``predict_many``
    are conveniences over it. Predictions are in seconds and strictly positive.
    """

    def predict(self, shape: BatchShape) -> float: ...

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray: ...

    def predict_features(self, X: np.ndarray) -> np.ndarray: ...
