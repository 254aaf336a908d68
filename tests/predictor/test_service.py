"""The publisher's logic: reservoirs, the validation gate, monotonic versions (no Ray)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from predictor_factories import GPU, profile_provenance, profile_trace, relabeled, trained_bundle

from predictor.bundle import read_version
from predictor.provenance import ProvenanceMismatchError, trace_provenance
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
    strict = PredictorService(ServiceConfig(max_mape=0.5), trained_bundle().to_bytes())
    for gate in (strict, svc):  # beyond the MAPE ceiling, or just not better than the current
        result = gate.submit(_biased_bundle(1.6), holdout=test)
        assert not result.published
        assert result.candidate_mape is not None and result.current_mape is not None
        assert result.candidate_mape > result.current_mape
        assert gate.stats()["holdout_samples"] == 0  # the refused job's steps are not kept
    assert "exceeds max_mape 0.5" in strict.stats()["history"][-1]["reason"]  # type: ignore[index]
    assert "does not beat" in svc.stats()["history"][-1]["reason"]  # type: ignore[index]
    assert svc.version() == 1 and svc.model_bytes() == good
    assert read_version(tmp_path / "live") == 1


def test_gate_publishes_a_better_model_with_next_version() -> None:
    _, test = _split()
    svc = PredictorService(ServiceConfig(), _biased_bundle(1.6))
    result = svc.submit(trained_bundle().to_bytes(), holdout=test)
    assert result.published and result.version == 2 and svc.version() == 2
    assert svc.stats()["holdout_samples"] == len(test)  # accepted: its held-out steps join
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
    svc.add_samples(trace.X, trace.latency_s, profile_provenance())
    first = svc.retrain()
    assert first.published and first.version == 1  # no current model: within max_mape
    assert first.candidate_mape is not None and first.candidate_mape <= 1.0
    second = svc.retrain()  # same data again: not better than itself
    assert not second.published and svc.version() == 1
    with pytest.raises(ValueError, match="latency_s"):
        svc.add_samples(trace.X[:2], [0.01, -1.0], profile_provenance())
    # the model it trained records the replicas' provenance, so they accept it
    from predictor.bundle import ModelBundle

    _, blob = svc.model_bytes()  # type: ignore[misc]
    assert ModelBundle.from_bytes(blob).provenance["hardware"] == profile_provenance().hardware


def test_first_model_passes_the_gate_too() -> None:
    _, test = _split()
    svc = PredictorService(ServiceConfig(min_holdout_samples=50))
    result = svc.submit(trained_bundle().to_bytes())  # nothing held out: cannot validate
    assert not result.published and "cannot validate" in result.reason
    result = svc.submit(trained_bundle().to_bytes(), holdout=test.subset(np.arange(10)))
    assert not result.published and "10 held-out samples" in result.reason
    result = svc.submit(_biased_bundle(2.5), holdout=test)  # 150 % too slow on every step
    assert not result.published and "exceeds max_mape 1.0" in result.reason
    assert svc.version() == 0 and svc.model_bytes() is None
    assert svc.stats()["holdout_samples"] == 0 and svc.served() is None
    result = svc.submit(trained_bundle().to_bytes(), holdout=test)
    assert result.published and result.version == 1 and result.current_mape is None
    assert svc.stats()["holdout_samples"] == len(test)
    assert svc.served() == profile_provenance()  # bound by the first model it accepted


def test_other_served_model_or_hardware_is_refused() -> None:
    _, test = _split()
    trace = profile_trace()
    svc = PredictorService(ServiceConfig(), trained_bundle().to_bytes())  # bound to the CPU
    seen = svc.stats()["seen"]
    with pytest.raises(ProvenanceMismatchError, match="hardware 'NVIDIA H100 80GB HBM3'"):
        svc.add_samples(trace.X, trace.latency_s, GPU)
    gpu_model = fit_bundle(relabeled(trace, GPU), TrainConfig(num_boost_round=50))
    with pytest.raises(ProvenanceMismatchError, match="kept apart per served model"):
        svc.submit(gpu_model.to_bytes(), holdout=relabeled(test, GPU))
    assert svc.stats()["seen"] == seen and svc.version() == 1

    # bound at construction (as replicas create it): the CPU model is refused before any gate
    gpu_svc = PredictorService(ServiceConfig(), served=GPU)
    with pytest.raises(ProvenanceMismatchError, match="model 'tiny-llama"):
        gpu_svc.submit(trained_bundle().to_bytes(), force=True)
    assert gpu_svc.version() == 0
    # held-out steps must come from where the candidate was trained
    with pytest.raises(ProvenanceMismatchError, match="held-out steps"):
        svc.submit(trained_bundle().to_bytes(), holdout=relabeled(test, GPU))
    # a trace mixing hardware is refused as a whole
    bigger = replace(profile_provenance(), hardware="x86_64-64cpu")
    mixed = StepTrace.concat([test, relabeled(test, bigger)])
    with pytest.raises(ProvenanceMismatchError, match="mixes hardwares"):
        trace_provenance(mixed)


def test_a_model_fitted_on_short_prefills_only_is_not_published() -> None:
    """Steps of short prompts only (held-out steps alike) make a model whose held-out error is
    fine but whose long chunks are extrapolated: refused until long prefills are sampled."""
    from slidingserve.latency.features import FEATURE_NAMES

    trace = profile_trace()
    prefill = trace.X[:, FEATURE_NAMES.index("prefill_tokens")]
    short, long_ = trace.subset(np.where(prefill <= 64)[0]), trace.subset(np.where(prefill > 64)[0])
    svc = PredictorService(ServiceConfig(min_train_samples=50, min_holdout_samples=20,
                                         min_prefill_tokens=256,
                                         train=TrainConfig(num_boost_round=50)))
    svc.add_samples(short.X, short.latency_s, profile_provenance())
    refused = svc.retrain()
    assert not refused.published and "at most 64 tokens" in refused.reason, refused
    assert refused.candidate_mape is not None and refused.candidate_mape < 0.2  # looks fine
    svc.add_samples(long_.X, long_.latency_s, profile_provenance())
    published = svc.retrain()
    assert published.published and published.version == 1, published
    from predictor.bundle import ModelBundle

    _, blob = svc.model_bytes()  # type: ignore[misc]
    coverage = ModelBundle.from_bytes(blob).metrics["coverage"]
    assert coverage["max_prefill_tokens"] == int(prefill.max())
    # a candidate that records no coverage (trained elsewhere, by an older trainer) is refused
    bare = replace(trained_bundle(), metrics={})
    refused = svc.submit(bare.to_bytes())
    assert not refused.published and "no training coverage" in refused.reason
