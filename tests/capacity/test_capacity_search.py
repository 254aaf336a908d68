"""Knee search on known curves, and on a tiny real simulated case."""

from __future__ import annotations

import pytest

from slidingserve.capacity.config import CapacityConfig, Contender, ablation_contenders
from slidingserve.capacity.harness import run_capacity
from slidingserve.capacity.search import TrialCache, find_knee
from slidingserve.capacity.trial import TrialResult
from slidingserve.sim import SimConfig


def fake(violation_at) -> TrialCache:
    def evaluate(rate: float) -> TrialResult:
        v = violation_at(rate)
        return TrialResult(rate, 0, v, 1.0 - v, {"t": v}, 100, False, 0.0)

    return TrialCache(evaluate)


def test_knee_interpolates_a_linear_curve_exactly():
    # violation rises linearly from 0 at 10 rps to 10% at 20 rps: 1% is crossed at 11 rps
    cache = fake(lambda r: max(0.0, (r - 10.0) / 100.0))
    knee = find_knee(cache, lambda t: t.worst_violation - 0.01, start=3.0, rel_tol=0.02)
    assert knee.lo is not None and knee.hi is not None
    assert knee.lo <= 11.0 <= knee.hi
    assert (knee.hi - knee.lo) <= 0.02 * knee.hi
    assert knee.capacity == pytest.approx(11.0, rel=1e-6)


def test_second_criterion_reuses_cached_trials():
    cache = fake(lambda r: min(1.0, max(0.0, (r - 10.0) / 20.0)))
    k1 = find_knee(cache, lambda t: t.worst_violation - 0.01, start=40.0, rel_tol=0.03)
    runs = cache.runs
    k90 = find_knee(cache, lambda t: 0.9 - t.attainment, start=k1.capacity, rel_tol=0.03)
    assert k1.capacity == pytest.approx(10.2, rel=0.01)
    assert k90.capacity == pytest.approx(12.0, rel=0.01)
    assert k90.trials == cache.runs - runs < k1.trials


def test_always_failing_and_never_failing_curves():
    never = find_knee(fake(lambda r: 0.0), lambda t: t.worst_violation - 0.01, 1.0)
    assert never.hi is None and never.capacity >= 1e4 / 1.6
    always = find_knee(fake(lambda r: 1.0), lambda t: t.worst_violation - 0.01, 1.0)
    assert always.capacity == 0.0 and always.lo is None


def test_tiny_real_capacity_run_is_consistent():
    cfg = CapacityConfig(
        contenders=[Contender(label="fcfs", policy="vllm-fcfs")],
        seeds=2,
        budgets=[512, 4096],
        trial_seconds=4.0,
        warmup_seconds=1.0,
        horizon_seconds=8.0,
        min_requests=30,
        rel_tol=0.15,
        sweep_rel_tol=0.3,
        curve_points=[1.0, 1.3],
        reference="fcfs",
        workers=1,
        # A small engine (8 sequences) keeps the knee at a few requests/s: fast trials.
        sim=SimConfig(max_num_seqs=8),
        start_rate=2.0,
    )
    result = run_capacity(cfg)
    r = result["policies"]["fcfs"]
    assert r["budget"] in (512, 4096)
    assert set(r["budget_sweep"]) == {"512", "4096"}
    assert r["capacity_rps"] > 0
    assert r["capacity_rps_90"] >= r["capacity_rps"] * 0.9
    spread = r["spread"]["capacity_rps"]
    assert spread["min"] <= r["capacity_rps"] <= spread["max"]
    assert len(spread["per_seed"]) == 2
    # every trial below the reported capacity's lower bracket passed, above the upper failed
    line = result["curve"]["lines"]["fcfs"]
    assert [p["rate"] for p in line] == pytest.approx([r["capacity_rps"], 1.3 * r["capacity_rps"]])


def test_config_rejects_duplicates_and_bad_budgets():
    c = Contender(label="a", policy="vllm-fcfs")
    with pytest.raises(ValueError, match="duplicates"):
        CapacityConfig(contenders=[c, c])
    with pytest.raises(ValueError, match="got 0"):
        CapacityConfig(contenders=[c], budgets=[0])
    labels = [x.label for x in ablation_contenders()]
    assert "slidingserve-no-sliding-chunker" in labels and len(labels) == 11
    assert "slidingserve-no-e2e-pace" in labels and "slidingserve-no-fit-decodes" in labels
    assert "slidingserve-no-kv-pacer" in labels and "slidingserve-no-learned-reserve" in labels
    assert "slidingserve-no-step-margin" in labels and "slidingserve-no-ttft-floor" in labels


def test_each_criterion_compares_with_the_baseline_best_at_it():
    from slidingserve.capacity.harness import _comparison
    from slidingserve.capacity.report import capacity_table

    pols = {
        "slidingserve": {"policy": "slidingserve", "capacity_rps": 16.0, "capacity_rps_90": 29.0},
        "qoserve": {"policy": "qoserve", "capacity_rps": 18.0, "capacity_rps_90": 25.0},
        "vllm-priority": {"policy": "vllm-priority", "capacity_rps": 18.5, "capacity_rps_90": 20.0},
    }
    out = {"policies": pols, "curve": {"lines": {}}, "reference": "qoserve"}
    cmp = _comparison(out, CapacityConfig(contenders=[Contender(label="s", policy="slidingserve")]))
    assert (cmp["best_baseline"], cmp["best_baseline_90"]) == ("vllm-priority", "qoserve")
    assert cmp["capacity_ratio"] == pytest.approx(16.0 / 18.5)
    assert cmp["capacity_ratio_90"] == pytest.approx(29.0 / 25.0)  # not 29 / 20
    spread = {"capacity_rps": {"min": 0.0, "max": 0.0}}
    table = capacity_table({"policies": {k: {**v, "spread": spread, "budget": None, "trials": 1}
                                         for k, v in pols.items()}, "comparison": cmp})
    assert "/ qoserve: 1.16x (90%)" in str(table.caption)
