"""Arrivals, tier mixes, synthetic lengths and the workload builder."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from slidingserve.slo import load_tiers
from slidingserve.workload import (
    TierMixError,
    WorkloadConfig,
    build_workload,
    gamma_arrivals,
    parse_tier_mix,
    poisson_arrivals,
    synthetic_lengths,
)

TIERS = load_tiers()


def test_poisson_rate_and_cv():
    t = poisson_arrivals(10.0, 20_000, np.random.default_rng(0))
    gaps = np.diff(t)
    assert t[0] == 0.0 and np.all(gaps >= 0)
    assert abs(gaps.mean() - 0.1) < 0.005
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05


def test_gamma_burstiness_sets_the_cv():
    gaps = np.diff(gamma_arrivals(5.0, 3.0, 50_000, np.random.default_rng(1)))
    assert abs(gaps.mean() - 0.2) < 0.02
    assert abs(gaps.std() / gaps.mean() - 3.0) < 0.3


@pytest.mark.parametrize(("rate", "cv", "n"), [(0.0, 1.0, 5), (1.0, 0.0, 5), (1.0, 1.0, 0)])
def test_bad_arrival_parameters_are_named(rate, cv, n):
    with pytest.raises(ValueError, match=r"\(got 0"):
        gamma_arrivals(rate, cv, n, np.random.default_rng(0))


def test_tier_mix_parser():
    assert parse_tier_mix("interactive=1,batch=3", TIERS) == {
        "interactive": 0.25,
        "standard": 0.0,
        "batch": 0.75,
    }
    assert parse_tier_mix(" interactive = 0.2 , standard=0.5,batch=0.3 ", TIERS)["standard"] == 0.5


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("gold=1", "unknown tier 'gold'"),
        ("interactive", "expected NAME=SHARE"),
        ("interactive=x", "share 'x' is not a number"),
        ("interactive=-1", "must be >= 0"),
        ("interactive=1,interactive=2", "given twice"),
        ("interactive=0", "sum to > 0"),
        ("", "sum to > 0"),
    ],
)
def test_bad_tier_mix_names_the_entry(text, pattern):
    with pytest.raises(TierMixError, match=pattern):
        parse_tier_mix(text, TIERS)


def test_default_mix_follows_the_tier_file_and_is_seeded():
    cfg = WorkloadConfig(rate=4.0, num_requests=5000, seed=7)
    specs = build_workload(cfg, TIERS)
    shares = {t: sum(s.tier == t for s in specs) / len(specs) for t in TIERS}
    assert abs(shares["interactive"] - 0.2) < 0.03
    assert abs(shares["standard"] - 0.5) < 0.03
    assert abs(shares["batch"] - 0.3) < 0.03
    assert build_workload(cfg, TIERS) == specs
    assert build_workload(cfg.model_copy(update={"seed": 8}), TIERS) != specs
    assert abs(specs[-1].arrival_s / (len(specs) - 1) - 0.25) < 0.02


def test_synthetic_lengths_match_the_published_azure_summary():
    p, o = synthetic_lengths(100_000, np.random.default_rng(0))
    assert abs(np.median(p) - 1020) < 40 and abs(p.mean() - 1155) < 60
    assert abs(np.median(o) - 129) < 8 and abs(o.mean() - 211) < 15
    assert p.min() >= 1 and o.min() >= 1


def test_trace_lengths_and_replay_with_time_scaling(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,11,1\n1,22,2\n2,33,3\n4,44,4\n")
    sampled = build_workload(WorkloadConfig(trace=path, rate=2.0, num_requests=50), TIERS)
    assert {(s.prompt_len, s.output_len) for s in sampled} <= {(11, 1), (22, 2), (33, 3), (44, 4)}
    replay = build_workload(WorkloadConfig(trace=path, arrival="replay", time_scale=0.5), TIERS)
    assert [s.arrival_s for s in replay] == [0.0, 0.5, 1.0, 2.0]
    assert [s.prompt_len for s in replay] == [11, 22, 33, 44]
    at_rate = build_workload(WorkloadConfig(trace=path, arrival="replay", rate=3.0), TIERS)
    assert at_rate[-1].arrival_s == pytest.approx(1.0)  # 3 gaps at 3 requests/s
    first_two = build_workload(WorkloadConfig(trace=path, arrival="replay", num_requests=2), TIERS)
    assert len(first_two) == 2


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"arrival": "poisson", "num_requests": 5}, "needs a rate"),
        ({"arrival": "gamma", "rate": 1.0}, "needs num_requests"),
        ({"arrival": "replay"}, "needs a trace"),
        ({"rate": -1.0, "num_requests": 3}, "rate"),
        ({"arrival": "uniform", "rate": 1.0, "num_requests": 3}, "arrival"),
    ],
)
def test_bad_workload_configs_name_the_field(kwargs, pattern):
    with pytest.raises(ValidationError, match=pattern):
        WorkloadConfig(**kwargs)
