"""The trial's steady-state rule: deferral within deadlines is on time; a growing backlog is not."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import typer

from slidingserve.capacity.cli import parse_contender
from slidingserve.capacity.trial import (
    EarlyPass,
    SteadyStateMonitor,
    TrialSpec,
    backlog_growth,
    load_latency_model,
    run_trial,
)
from slidingserve.latency import RooflineModel
from slidingserve.sim import SimConfig, simulate
from slidingserve.slo import load_tiers
from slidingserve.workload import RequestSpec


def test_backlog_growth_is_the_backlog_slope_over_the_rate():
    ramp = [(float(t), 3 * t) for t in range(0, 50, 5)]  # +3 requests/s
    assert backlog_growth(ramp, 10.0) == pytest.approx(0.3)
    assert backlog_growth([(float(t), 7) for t in range(0, 50, 5)], 10.0) == 0.0
    draining = [(float(t), 100 - t) for t in range(0, 50, 5)]
    assert backlog_growth(draining, 10.0) == 0.0  # never negative
    assert backlog_growth(ramp[:2], 10.0) == 0.0  # too few samples to say


def test_work_deferred_past_the_horizon_but_within_its_deadline_is_on_time():
    # One decode slot; a burst of 15 `standard` requests (priority 1) and one `batch` request
    # (priority 2, 1800 s deadline) at t=0: vllm-priority serves the batch one last, long after
    # a 1 s horizon (the old rule cut it there as a violation). The backlog only drains.
    tiers = load_tiers(None)
    specs = [RequestSpec(i, 0.0, 64, 100, "standard") for i in range(15)]
    specs.append(RequestSpec(15, 0.0, 64, 100, "batch"))
    monitor = SteadyStateMonitor(range(16), tiers, 16, 1.0, (0.0, 0.0), 1.0, 0.01)
    result = simulate(specs, tiers, "vllm-priority", SimConfig(max_num_seqs=1), monitor=monitor)
    batch = result.records[15]
    assert batch.first_token_s is not None and batch.first_token_s > 5.0  # past the horizon
    assert not monitor.overloaded and not monitor.cut_at_horizon
    assert all(r.meets_slo(tiers[r.tier]) for r in result.records)


def test_an_overloaded_trial_is_cut_and_bounded_by_its_backlog_growth():
    tiers = load_tiers(None)
    spec = TrialSpec(
        "vllm-priority",
        {},
        8.0,
        0,
        60,
        tiers,
        SimConfig(max_num_seqs=8),
        warmup=10,
        horizon_s=5.0,
    )
    r = run_trial(spec)
    assert r.growth > spec.overload_cut and r.stopped_early
    assert r.worst_violation >= r.growth
    assert r.attainment <= 1.0 - r.growth
    # far below the knee nothing is cut and the backlog does not grow
    calm = run_trial(
        TrialSpec(
            "vllm-priority",
            {},
            1.0,
            0,
            60,
            tiers,
            SimConfig(max_num_seqs=8),
            warmup=10,
            horizon_s=5.0,
        )
    )
    assert calm.growth < 0.01 and not calm.stopped_early and calm.worst_violation < 0.01


def test_a_trial_runs_on_a_trained_predictor_model():
    model = Path("predictor/data/cpu_tiny/model")
    latency = load_latency_model(model)
    assert not isinstance(latency, RooflineModel)
    tiers = load_tiers(None)
    spec = TrialSpec(
        "slidingserve", {}, 1.0, 0, 20, tiers, SimConfig(max_num_seqs=8), latency_model=model
    )
    r = run_trial(spec)
    assert r.measured == 20 and r.stats["steps"] > 0


def test_contender_option_parses_label_policy_and_overrides():
    c = parse_contender('w1=slidingserve:{"chunker": {"window": 1}}')
    assert (c.label, c.policy, c.overrides) == ("w1", "slidingserve", {"chunker": {"window": 1}})
    assert parse_contender("q=qoserve").overrides == {}
    for bad in ["slidingserve", "x=nosuch", 'x=qoserve:{"a": ', "x=qoserve:[1]"]:
        with pytest.raises(typer.BadParameter):
            parse_contender(bad)


def _burst_with_one_long_batch_request(rule: EarlyPass):
    """15 `standard` requests and one long `batch` one at t=0 on one decode slot (the batch
    one runs last), monitored with ``rule`` from a 1 s horizon on."""
    tiers = load_tiers(None)
    specs = [RequestSpec(i, 0.0, 64, 100, "standard") for i in range(15)]
    specs.append(RequestSpec(15, 0.0, 64, 4000, "batch"))
    monitor = SteadyStateMonitor(
        range(16), tiers, 16, 1.0, (0.0, 0.0), 1.0, rule.share, rule
    )
    result = simulate(specs, tiers, "vllm-priority", SimConfig(max_num_seqs=1), monitor=monitor)
    return monitor, result


def test_a_trial_that_passes_for_sure_stops_before_its_long_work_ends():
    # Judged overall at 10%: once the standard requests are done, the batch one alone (1 of
    # 16) cannot make the trial fail, so the monitor stops before it finishes.
    monitor, result = _burst_with_one_long_batch_request(EarlyPass(0.1, per_tier=False))
    assert monitor.passed and monitor.unsettled == {"batch": 1}
    assert not result.records[15].finished
    assert all(r.finished for r in result.records[:15])


def test_no_early_pass_while_the_unsettled_requests_could_still_fail_it():
    # Judged per tier at 1%, the one batch request is 100% of its tier: the run follows it
    # to its end, as without the rule.
    monitor, result = _burst_with_one_long_batch_request(EarlyPass(0.01, per_tier=True))
    assert not monitor.passed and not monitor.unsettled
    assert all(r.finished for r in result.records)


def test_an_early_pass_reports_the_verdict_and_counts_what_was_open_as_on_time():
    tiers = load_tiers(None)
    base = TrialSpec(
        "vllm-priority", {}, 4.0, 0, 200, tiers, SimConfig(max_num_seqs=8), warmup=10,
        horizon_s=5.0,
    )
    full = run_trial(base)
    early = run_trial(replace(base, early_pass=EarlyPass(0.1, per_tier=False)))
    assert not full.passed_early and full.unsettled == 0
    assert early.passed_early and not early.stopped_early
    assert early.stats["end_s"] < full.stats["end_s"]
    # the same verdict under the criterion the rule was given (90% attainment)
    assert (full.attainment >= 0.9) == (early.attainment >= 0.9) is True
    # the open requests count as on time: the attainment is at most what it would be if
    # every settled one had met its SLO, and at least the attainment with them all violated
    lowest = early.attainment - early.unsettled / early.measured
    assert lowest <= full.attainment <= 1.0 and lowest >= 0.9 - 1e-12
