"""The publisher's logic: reservoirs, the validation gate, monotonic versions (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from predictor_factories import profile_trace, trained_bundle

from predictor.bundle import read_version
from predictor.service import PredictorService, Reservoir, ServiceConfig
from predictor.steptrace import StepTrace
from predictor.training import TrainConfig, fit_bundle, split_indices


def _split() -> tuple[StepTrace, StepTrace]:
    tr, te = split_indices(len(profile_trace()), 0.2, 0)
    return profile_trace().subset(tr), profile_trace().subset(te)


def _biased_bundle(factor: float) -> bytes:
    """A model trained on the same steps with every latency scaled by ``factor``: worse."""
    train, _ = _split()
    scaled = StepTrace(train.X, train.latency_s * factor, train.provenance)
    return fit_bundle(scaled, TrainConfig(num_boost_round=100)).to_bytes()


def test_reservoir_is_bounded_and_uniform() -> None:
    res = Reservoir(100, np.random.default_rng(0))
    X = np.zeros((10_000, 7))
    y = np.arange(1, 10_001, dtype=float)
    res.add(X, y)
    assert len(res) == 100 and res.seen == 10_000
    assert 3000 < res.y.mean() < 7000  # a uniform sample of 1..10000, not the first 100


def test_gate_keeps_current_model_when_candidate_is_worse(tmp_path: Path) -> None:
    _, test = _split()
    svc = PredictorService(ServiceConfig(store_dir=tmp_path / "live"), trained_bundle().to_bytes())
    assert svc.version() == 1 and read_version(tmp_path / "live") == 1
    good = svc.model_bytes()
    svc.add_holdout(test.X, test.latency_s)
    result = svc.submit(_biased_bundle(1.6))
    assert not result.published and "does not beat" in result.reason
    assert result.candidate_mape is not None and result.current_mape is not None
    assert result.candidate_mape > result.current_mape
    assert svc.version() == 1 and svc.model_bytes() == good
    assert read_version(tmp_path / "live") == 1


def test_gate_publishes_a_better_model_with_next_version() -> None:
    _, test = _split()
    svc = PredictorService(ServiceConfig(), _biased_bundle(1.6))
    svc.add_holdout(test.X, test.latency_s)
    result = svc.submit(trained_bundle().to_bytes())
    assert result.published and result.version == 2 and svc.version() == 2
    version, blob = svc.model_bytes()  # type: ignore[misc]
    assert version == 2
    # the published bytes carry the service's version, not the candidate's own
    from predictor.bundle import ModelBundle

    assert ModelBundle.from_bytes(blob).version == 2


def test_gate_refuses_corrupt_candidate_and_unvalidated_swap() -> None:
    svc = PredictorService(ServiceConfig(), trained_bundle().to_bytes())
    assert "refused" in svc.submit(b"{not json").reason
    # without held-out samples the gate cannot compare, so it keeps the current model
    result = svc.submit(trained_bundle().to_bytes())
    assert not result.published and "held-out" in result.reason
    assert svc.version() == 1


def test_retrain_from_samples() -> None:
    svc = PredictorService(ServiceConfig(min_train_samples=50, holdout_fraction=0.3,
                                         train=TrainConfig(num_boost_round=100)))
    assert "training samples" in svc.retrain().reason
    trace = profile_trace()
    svc.add_samples(trace.X, trace.latency_s)
    first = svc.retrain()
    assert first.published and first.version == 1  # no current model: published
    second = svc.retrain()  # same data again: not better than itself
    assert not second.published and svc.version() == 1
    with pytest.raises(ValueError, match="latency_s"):
        svc.add_samples(trace.X[:2], [0.01, -1.0])
