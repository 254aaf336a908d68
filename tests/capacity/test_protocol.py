"""The QoServe protocol: tiers judged as published, trials run to completion, the growth rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidingserve.capacity.limit import backlog_at_last_arrival, sustainable_rate
from slidingserve.capacity.protocol import (
    qoserve_capacity_config,
    qoserve_contenders,
    qoserve_sim_config,
    qoserve_tiers,
    run_completion_trial,
)
from slidingserve.capacity.trial import backlog_growth
from slidingserve.metrics import RequestRecord
from slidingserve.sim import SimConfig
from slidingserve.workload import Trace

QT = qoserve_tiers()


def record(tier: str, ttft: float, e2e: float, n: int = 100) -> RequestRecord:
    return RequestRecord(0.0, tier, ttft, e2e, n, True)


def test_tier_0_is_judged_on_ttft_only_and_tiers_1_2_on_time_to_last_token() -> None:
    assert record("interactive", 5.9, 500.0).meets_slo(QT["interactive"])  # slow decode: fine
    assert not record("interactive", 6.1, 6.2).meets_slo(QT["interactive"])
    assert record("standard", 599.0, 599.5).meets_slo(QT["standard"])  # late first token: fine
    assert not record("standard", 10.0, 600.5).meets_slo(QT["standard"])
    assert record("batch", 1700.0, 1799.0, n=2).meets_slo(QT["batch"])  # TPOT 99 s: not judged
    assert not record("batch", 1.0, 1800.5).meets_slo(QT["batch"])


def test_the_preset_is_as_published() -> None:
    cfg = qoserve_capacity_config(Path("trace.csv"))
    assert [c.label for c in cfg.contenders] == ["fcfs-256", "edf-256", "qoserve-paper",
                                                 "slidingserve"]
    assert cfg.protocol_requests == 18_000 and cfg.latency_model == "qoserve-a100"
    assert cfg.sim.max_num_seqs == 1000
    assert {t.tpot_s for t in QT.values()} == {0.055, 0.4}
    assert QT.mix() == pytest.approx({"interactive": 1 / 3, "standard": 1 / 3, "batch": 1 / 3})


def small_trace() -> Trace:
    rng = np.random.default_rng(0)
    return Trace("test", None, rng.integers(50, 600, 200), rng.integers(5, 60, 200))


@pytest.mark.parametrize("label", ["fcfs-256", "edf-256", "qoserve-paper", "slidingserve"])
def test_a_small_trial_runs_every_request_to_completion(label: str) -> None:
    c = next(c for c in qoserve_contenders() if c.label == label)
    r = run_completion_trial(c.policy, c.overrides, 2.0, 0, 120, QT, qoserve_sim_config(),
                             small_trace(), "qoserve-a100", abort_tier_violation=1.0)
    assert r.stats["finished"] == 120 and r.measured == 120 and not r.stopped_early
    assert set(r.tier_violation) == {"interactive", "standard", "batch"}
    assert r.worst_violation == 0.0  # far below capacity


def test_an_overloaded_trial_stops_once_the_worst_tier_is_surely_past_the_limit() -> None:
    c = qoserve_contenders()[0]
    r = run_completion_trial(c.policy, c.overrides, 40.0, 0, 400, QT,
                             SimConfig(max_num_seqs=4), small_trace(), "qoserve-a100",
                             abort_tier_violation=0.1)
    assert r.stopped_early and r.worst_violation > 0.1
    assert r.stats["finished"] < 400


def ramp_then_flat(depth: int, ramp_s: float, end_s: float) -> list[tuple[float, int]]:
    wiggle = [0, 3, -2, 1, -3, 2]
    return [
        (t, round(depth * min(t / ramp_s, 1.0)) + (wiggle[i % 6] if t > ramp_s else 0))
        for i, t in enumerate(np.arange(0.0, end_s, 5.0))
    ]


def test_a_stable_deep_queue_is_not_growth_but_a_growing_one_is() -> None:
    rate = 10.0
    deep = ramp_then_flat(depth=400, ramp_s=100.0, end_s=240.0)  # fills, then holds
    assert backlog_growth(deep, rate) < 0.01
    assert backlog_growth(deep, rate, steady_from=0.0) > 0.1  # the old rule: cut as overload
    growing = [(t, round(2.0 * t)) for t in np.arange(0.0, 240.0, 5.0)]  # +2 requests/s
    assert backlog_growth(growing, rate) == pytest.approx(0.2, rel=0.02)


def test_the_throughput_limit_separates_a_stable_rate_from_an_unstable_one() -> None:
    trace, sim = small_trace(), SimConfig(max_num_seqs=16)
    limit = sustainable_rate(trace, "qoserve-a100", sim, 512, start=5.0, num_requests=300)
    assert limit > 0
    assert backlog_at_last_arrival(0.5 * limit, trace, "qoserve-a100", sim, 512, 300) <= 0.02
    assert backlog_at_last_arrival(2.0 * limit, trace, "qoserve-a100", sim, 512, 300) > 0.02


def test_the_published_rate_sweep_interpolates_at_the_first_failing_rate(tmp_path: Path) -> None:
    from slidingserve.capacity.harness import run_capacity

    trace = tmp_path / "lengths.csv"
    rows = "\n".join(f"{p},{o}" for p, o in zip(small_trace().prompt_len,
                                                 small_trace().output_len, strict=True))
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + rows + "\n")
    cfg = qoserve_capacity_config(
        trace, contenders=qoserve_contenders()[:1], seeds=1, num_requests=150, workers=1,
        curve_points=(),
    ).model_copy(update={"rates": {"fcfs-256": [1.0, 2.0, 400.0, 800.0]}})
    out = run_capacity(cfg)
    r = out["policies"]["fcfs-256"]
    rates = [p["rate"] for p in r["trial_points"]]
    assert rates == [1.0, 2.0, 400.0]  # stops at the first failing rate
    assert 2.0 <= r["capacity_rps"] < 400.0 and r["capacity_rps_90"] is None
    assert out["throughput_limit"] is None
