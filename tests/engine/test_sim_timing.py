"""The engine benchmark's simulator timing, measured from the run's own step traces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from predictor.steptrace import Provenance, StepTrace, write_steptrace
from slidingserve.engine.sim_timing import (
    measured_noise,
    nearest_trial,
    plan_time_s,
    trial_timing,
)
from slidingserve.latency import BatchShape
from slidingserve.latency.features import features_of


class Flat:
    """Every step predicted at 10 ms."""

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), 0.010)


def test_noise_is_the_spread_of_log_measured_over_predicted(tmp_path: Path) -> None:
    X = np.array([features_of(BatchShape((), (10 * k,))) for k in range(1, 5)])
    ratios = [1.0, math.exp(0.1), math.exp(-0.1), 1.0]
    for i, folder in enumerate(("a", "b")):  # one trace per scheduler, pooled
        rows = slice(2 * i, 2 * i + 2)
        write_steptrace(StepTrace.from_arrays(X[rows], 0.010 * np.array(ratios[rows]) * 1.2,
                                              Provenance("e", "m", "h", "v")),
                        tmp_path / folder / "steps.csv")
    noise = measured_noise(tmp_path, Flat())  # type: ignore[arg-type]
    assert noise is not None and noise["steps"] == 4
    assert noise["sigma"] == pytest.approx(np.std([0, 0.1, -0.1, 0], ddof=1))
    assert noise["median_ratio"] == pytest.approx(1.2)
    assert measured_noise(tmp_path / "none", Flat()) is None  # type: ignore[arg-type]


def test_trial_timing_from_overhead_figures() -> None:
    overhead = {"sched_ms": {"mean": 2.5}, "plan_ms": {"mean": 1.5}, "plan_cpu_ms": {"mean": 0.5}}
    assert plan_time_s(overhead, "sched") == pytest.approx(0.0025)
    assert plan_time_s(overhead, "plan-cpu") == pytest.approx(0.0005)
    assert plan_time_s(None, "sched") == 0.0  # vLLM's own scheduler: no trace
    assert plan_time_s(overhead, "none") == 0.0
    measured = trial_timing("measured", {"sigma": 0.123456}, 0.002)
    assert measured.label() == "noise(sigma=0.123) +plan 2ms"
    assert trial_timing("measured", None, 0.002).label() == "oracle +plan 2ms"
    assert trial_timing("oracle", {"sigma": 0.1}, 0.002).label() == "oracle"
    trials = {"3.0": {"x": 3}, "9.0": {"x": 9}}
    assert nearest_trial(trials, 7.0) == {"x": 9} and nearest_trial({}, 1.0) is None
