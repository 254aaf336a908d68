"""Shared test data: the committed real CPU profile and models trained on it (cached per run)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from predictor.bundle import ModelBundle
from predictor.provenance import trace_provenance
from predictor.steptrace import Provenance, StepTrace, aggregate_identical, read_steptrace
from predictor.training import TrainConfig, train_model

PROFILE = Path(__file__).resolve().parents[2] / "predictor" / "data" / "cpu_tiny" / "steps.csv"


@cache
def profile_trace() -> StepTrace:
    """The committed vLLM CPU profile, repeats merged by their minimum (as ``predictor.train``)."""
    return aggregate_identical(read_steptrace(PROFILE), "min")


def profile_provenance() -> Provenance:
    """Where the committed profile was measured (one CPU machine, the tiny model)."""
    return trace_provenance(profile_trace())


GPU = Provenance("vllm", "llama-3-8b", "NVIDIA H100 80GB HBM3", "0.32.0")


def relabeled(trace: StepTrace, prov: Provenance) -> StepTrace:
    """The same steps, recorded as measured on ``prov``."""
    return StepTrace.from_arrays(trace.X, trace.latency_s, prov)


@cache
def trained_bundle(rounds: int = 300) -> ModelBundle:
    return train_model(profile_trace(), TrainConfig(num_boost_round=rounds))


def probe_features(n: int, seed: int = 0) -> np.ndarray:
    """Rows around and beyond the profile's range, plus the split thresholds' exact values."""
    X = profile_trace().X
    rng = np.random.default_rng(seed)
    rows = X[rng.integers(0, len(X), n)] * rng.uniform(0.5, 1.5, size=(n, 1))
    rows[:, 6] = rows[:, 0] + rows[:, 2]  # keep total_tokens consistent
    return np.vstack([X, rows, np.zeros((1, X.shape[1]))])
