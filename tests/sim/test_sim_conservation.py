"""Conservation, determinism, fast-forward equivalence, KV pressure, horizons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_factories import small_workload, specs_of, tiers

from slidingserve.metrics import summarize
from slidingserve.policy import policy_names
from slidingserve.sim import SimConfig, simulate
from slidingserve.slo import SLOTier, TierSet

POLICIES = policy_names()


def _check_all_done(specs, result) -> None:
    assert len(result.records) == len(specs)
    assert [r.key for r in result.records] == [s.key for s in specs]
    for s, r in zip(specs, result.records, strict=True):
        assert r.finished
        assert r.n_out == s.output_len
        assert r.first_token_s is not None and r.first_token_s > s.arrival_s
        assert r.last_token_s is not None and r.last_token_s >= r.first_token_s
    ran = result.stats["tokens_run"]
    minimum = sum(s.prompt_len + s.output_len - 1 for s in specs)
    assert ran >= minimum
    if result.stats["preemptions"] == 0:
        assert ran == minimum  # every token computed exactly once


@pytest.mark.parametrize("policy", POLICIES)
def test_every_request_finishes_once_and_every_token_is_computed(policy):
    specs = small_workload(60, rate=30.0)
    result = simulate(specs, tiers(), policy)
    _check_all_done(specs, result)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 25),
    rate=st.floats(0.5, 200.0),
    policy=st.sampled_from(POLICIES),
    blocks=st.sampled_from([None, 120]),
)
def test_conservation_on_random_workloads(seed, n, rate, policy, blocks):
    specs = small_workload(n, rate=rate, seed=seed)
    result = simulate(specs, tiers(), policy, SimConfig(num_blocks=blocks))
    _check_all_done(specs, result)


@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_result_and_different_seed_differs(policy):
    a = simulate(small_workload(50, seed=3), tiers(), policy)
    b = simulate(small_workload(50, seed=3), tiers(), policy)
    c = simulate(small_workload(50, seed=4), tiers(), policy)
    assert a.records == b.records
    assert a.end_s == b.end_s
    assert a.records != c.records


@pytest.mark.parametrize("policy", POLICIES)
def test_fast_forward_gives_identical_records(policy):
    specs = small_workload(80, rate=8.0, seed=1)
    cfg = SimConfig(record_token_times=True)
    fast = simulate(specs, tiers(), policy, cfg)
    plain = {"fast_forward": False, "skip_fixed_plans": False}  # every step asks the policy
    slow = simulate(specs, tiers(), policy, cfg.model_copy(update=plain))
    assert fast.stats["fast_forwarded_steps"] > 0
    assert slow.stats["fast_forwarded_steps"] == 0
    assert fast.stats["steps"] == slow.stats["steps"]
    assert fast.records == slow.records
    assert fast.stats["policy_calls"] < slow.stats["policy_calls"]


@pytest.mark.parametrize("policy", POLICIES)
def test_kv_pressure_preempts_and_still_completes(policy):
    # 24 blocks of 16 = 384 tokens of KV for requests of up to ~300 tokens: heavy contention.
    specs = specs_of([(0.001 * i, 120 + 7 * i, 40 + i, "standard") for i in range(12)])
    result = simulate(specs, tiers(), policy, SimConfig(num_blocks=24))
    _check_all_done(specs, result)
    assert result.stats["preemptions"] > 0
    assert sum(r.num_preemptions for r in result.records) == result.stats["preemptions"]


def test_token_times_match_the_record_and_token_level_counts():
    specs = small_workload(30, rate=15.0, seed=2)
    result = simulate(specs, tiers(), "vllm-fcfs", SimConfig(record_token_times=True))
    for s, r in zip(specs, result.records, strict=True):
        assert r.token_times is not None and len(r.token_times) == s.output_len
        assert r.token_times[0] == r.first_token_s and r.token_times[-1] == r.last_token_s
        assert list(r.token_times) == sorted(r.token_times)
        late_from_times = r.count_late_tokens(tiers()[s.tier])
        r.token_times = None
        assert r.count_late_tokens(tiers()[s.tier]) == late_from_times


def test_drain_horizon_leaves_unfinished_requests_as_violations():
    # 2 KV-bound replicas' worth of work on one replica, cut 0.5 s after the last arrival.
    specs = specs_of([(0.0, 4000, 2000, "interactive") for _ in range(4)])
    result = simulate(specs, tiers(), "vllm-fcfs", SimConfig(drain_s=0.5))
    assert result.stats["stopped_at_horizon"]
    summary = summarize(result.records, tiers())
    assert summary["overall"]["unfinished"] == 4
    assert summary["overall"]["violations"] == 4


def test_requests_longer_than_the_model_are_rejected_naming_the_request():
    specs = specs_of([(0.0, 30000, 5000, "batch")])
    with pytest.raises(ValueError, match="request 0"):
        simulate(specs, tiers(), "vllm-fcfs")


def test_fast_forward_counts_late_tokens_as_stepping_does():
    # Loose targets, token targets near the decode step time ("drift") and far below it, capped
    # ("late"): within fast-forward runs some requests stay on time, some turn late midway,
    # some are late throughout.
    tight = TierSet(
        [
            SLOTier("loose", ttft_s=1.0, tpot_s=0.1, e2e_s=None, weight=1, priority=0, share=1),
            SLOTier("drift", ttft_s=0.05, tpot_s=0.0075, e2e_s=None, weight=1, priority=1, share=0),
            SLOTier("late", ttft_s=0.002, tpot_s=0.001, e2e_s=0.05, weight=1, priority=2, share=0),
        ]
    )
    names = ("loose", "drift", "late")
    specs = specs_of([(0.05 * i, 20 + 7 * i, 40 + 13 * (i % 5), names[i % 3]) for i in range(24)])
    cfg = SimConfig(record_token_times=True)
    fast = simulate(specs, tight, "vllm-fcfs", cfg)
    plain = {"fast_forward": False, "skip_fixed_plans": False}
    slow = simulate(specs, tight, "vllm-fcfs", cfg.model_copy(update=plain))
    assert fast.stats["fast_forwarded_steps"] > 0
    assert fast.records == slow.records
    late = [(r.late_tokens or 0, r.n_out) for r in fast.records]
    assert any(n == 0 for n, _ in late)
    assert any(0 < n < out for n, out in late)
    assert any(n == out for n, out in late)
