"""Admission control on one replica (no engine needed: admission runs before the engine)."""

from __future__ import annotations

import time

import pytest

from slidingserve.latency.roofline import RooflineConfig, RooflineModel
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import EngineHost
from slidingserve.serve.messages import Admitted, GenerateRequest, Rejected
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tiers():
    return load_tiers()


def host(tiers, **admission) -> EngineHost:
    return EngineHost(load_serve_config({"admission": admission}), tiers, "r-test")


def request(tiers, tier="interactive", prompt_len=1000, waited_s=0.0, ttft_s=None):
    slo = RequestSLO.of_tier(tiers[tier])
    if ttft_s is not None:
        slo = RequestSLO(slo.tier, ttft_s, slo.tpot_s, slo.e2e_s, slo.priority)
    return GenerateRequest("r", [1] * prompt_len, slo, {"max_tokens": 4}, time.time() - waited_s)


def test_admits_what_it_can_serve_in_time(tiers):
    h = host(tiers)
    decision = h.admit(request(tiers))
    assert isinstance(decision, Admitted) and decision.downgraded_from is None
    assert 0 < decision.predicted_ttft_s < 6.0


def test_refuses_a_sure_miss_with_retry_after(tiers):
    h = host(tiers)
    h.costs.s_per_prefill_token = 0.01  # 1000 tokens -> 10 s > the 6 s interactive target
    decision = h.admit(request(tiers))
    assert isinstance(decision, Rejected)
    assert decision.target_s == 6.0 and decision.predicted_ttft_s > 10.0
    assert decision.retry_after_s >= 4
    # the batch tier's 1800 s target is met by the same replica
    assert isinstance(h.admit(request(tiers, "batch")), Admitted)


def test_time_already_waited_counts(tiers):
    h = host(tiers)
    assert isinstance(h.admit(request(tiers, prompt_len=10, waited_s=7.0)), Rejected)


def test_margin_and_disable(tiers):
    h = host(tiers, margin=2.0)
    h.costs.s_per_prefill_token = 0.01
    assert isinstance(h.admit(request(tiers)), Admitted)  # 10 s < 6 s x 2
    off = host(tiers, enabled=False)
    off.costs.s_per_prefill_token = 1.0
    assert isinstance(off.admit(request(tiers)), Admitted)


def test_downgrade_to_best_effort(tiers):
    h = host(tiers, on_reject="downgrade")
    h.costs.s_per_prefill_token = 0.01
    decision = h.admit(request(tiers))
    assert isinstance(decision, Admitted)
    assert decision.downgraded_from == "interactive" and decision.slo.tier == "batch"
    named = host(tiers, on_reject="downgrade", best_effort_tier="standard")
    named.costs.s_per_prefill_token = 0.01
    assert named.admit(request(tiers)).slo.tier == "standard"


def test_latency_model_replaces_running_averages(tiers):
    h = host(tiers)
    model = RooflineModel(RooflineConfig())
    h.set_latency_model(model, 7)
    load = h.load()
    assert load.model_version == 7
    budget = h.cfg.engine.max_num_batched_tokens
    from slidingserve.latency.features import BatchShape

    expected = model.predict(BatchShape(prefill=((budget, 0),))) / budget
    assert load.s_per_prefill_token == pytest.approx(expected)


def test_unknown_best_effort_tier_fails_at_start(tiers):
    with pytest.raises(ValueError, match="'gold'"):
        host(tiers, on_reject="downgrade", best_effort_tier="gold")


@pytest.mark.parametrize("keep", [False, True])
def test_replica_files_removed_at_shutdown_unless_kept(tiers, tmp_path, keep):
    cfg = load_serve_config({"engine": {"data_dir": str(tmp_path), "keep_replica_files": keep}})
    h = EngineHost(cfg, tiers, "r-files")
    h.files.latency_model.mkdir(parents=True)
    (h.files.root / "steps.parquet").write_bytes(b"x")
    h.shutdown()
    assert h.files.root.exists() == keep
