"""Seed bootstrap of a capacity run (``slidingserve.engine.spread``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slidingserve.cli import app
from slidingserve.engine.bench import requests_csv
from slidingserve.engine.spread import (
    bootstrap,
    capacities,
    seed_draws,
    spread,
    weighted_interval,
)
from slidingserve.metrics.records import RequestRecord, write_records_csv
from slidingserve.slo import load_tiers


def test_exact_draws_are_every_multiset_with_its_multinomial_probability() -> None:
    weights, prob, exact = seed_draws(3, draws=100)
    assert exact and weights.shape == (10, 3)  # C(5, 3) distinct draws of 3 seeds
    assert (weights.sum(axis=1) == 3).all()
    assert prob.sum() == pytest.approx(1.0)
    each_once = np.flatnonzero((weights == 1).all(axis=1))
    assert prob[each_once] == pytest.approx([6 / 27])
    one_seed_thrice = np.flatnonzero((weights == 3).any(axis=1))
    assert prob[one_seed_thrice] == pytest.approx([1 / 27] * 3)


def test_many_seeds_are_sampled_reproducibly() -> None:
    a, pa, exact = seed_draws(9, draws=300, rng_seed=4)  # C(17, 9) = 24,310 distinct draws
    b, _, _ = seed_draws(9, draws=300, rng_seed=4)
    assert not exact and a.shape == (300, 9) and (a == b).all()
    assert (a.sum(axis=1) == 9).all() and pa.sum() == pytest.approx(1.0)


def test_interval_is_the_central_share_of_a_discrete_distribution() -> None:
    values = np.array([3.0, 1.0, 2.0, 4.0])
    prob = np.array([0.25, 0.04, 0.46, 0.25])
    assert weighted_interval(values, prob, 0.9) == (2.0, 4.0)  # 1 holds 4%: in the 5% tail
    assert weighted_interval(values, np.array([0.25, 0.06, 0.44, 0.25]), 0.9) == (1.0, 4.0)
    assert weighted_interval(values, prob, 0.5) == (2.0, 3.0)
    assert weighted_interval(np.array([1.0, math.inf]), np.array([0.5, 0.5]), 0.9) \
        == (1.0, math.inf)


def _counts(met_by_rate: dict[float, list[int]], n: int = 100) -> dict[float, np.ndarray]:
    """One tier, ``n`` requests per seed, ``met`` of them on time, per rate."""
    return {r: np.array([[[n, m]] for m in mets]) for r, mets in met_by_rate.items()}


def test_capacities_match_the_sweep_rule() -> None:
    pooled = {1.0: np.array([[100, 100]]), 2.0: np.array([[100, 90]])}
    worst_1pct, overall_90 = capacities(pooled)
    assert worst_1pct == pytest.approx(1.1)  # 10% late at 2: crosses 1% a tenth of the way
    assert overall_90 == 2.0  # 90% attained at 2 passes; no rate fails


def test_one_bad_workload_moves_the_ratio_by_how_often_it_is_drawn() -> None:
    """The reference meets every SLO at both rates except on seed 0's workload at rate 2; the
    baseline loses 10% at rate 2 on every workload. The reference leads exactly in the draws
    without seed 0: (2/3)^3 = 8/27 of them."""
    counts = {
        "slidingserve": _counts({1.0: [100, 100, 100], 2.0: [0, 100, 100]}),
        "qoserve": _counts({1.0: [100, 100, 100], 2.0: [90, 90, 90]}),
    }
    res = bootstrap(counts, "slidingserve", level=0.9)
    assert res["exact"] and res["draws"] == 10
    ratio = res["ratio_to_best_baseline"]["capacity_rps"]
    assert ratio["share_at_least"] == pytest.approx(8 / 27)
    # all three seeds pooled: 100 of 300 late at rate 2, so 1 + 0.01 / (1/3) = 1.03 rps
    assert res["policies"]["slidingserve"]["capacity_rps"]["value"] == pytest.approx(1.03)
    assert ratio["value"] == pytest.approx(1.03 / 1.1)
    assert ratio["lo"] < 1.0 < ratio["hi"] == pytest.approx(2.0 / 1.1)
    base = res["policies"]["qoserve"]["capacity_rps"]
    assert base["lo"] == base["hi"] == pytest.approx(1.1)  # the same on every workload


def test_a_lead_on_every_workload_has_an_interval_above_one() -> None:
    counts = {
        "slidingserve": _counts({1.0: [100] * 4, 2.0: [100, 100, 99, 100], 3.0: [80] * 4}),
        "vllm-priority": _counts({1.0: [100] * 4, 2.0: [70, 90, 95, 85], 3.0: [50] * 4}),
        "qoserve": _counts({1.0: [100] * 4, 2.0: [80, 95, 90, 60], 3.0: [40] * 4}),
    }
    res = bootstrap(counts, "slidingserve")
    for c in ("capacity_rps", "capacity_rps_90"):
        r = res["ratio_to_best_baseline"][c]
        assert r["lo"] > 1.0 and r["share_at_least"] == pytest.approx(1.0)


def test_bad_runs_are_refused_with_a_reason() -> None:
    one_seed = {"slidingserve": _counts({1.0: [100]}), "qoserve": _counts({1.0: [100]})}
    with pytest.raises(ValueError, match="2 or more workload seeds"):
        bootstrap(one_seed, "slidingserve")
    with pytest.raises(ValueError, match="'edf' is not in the run"):
        bootstrap(one_seed, "edf")
    with pytest.raises(ValueError, match="level"):
        bootstrap(one_seed, "slidingserve", level=1.5)


def _write_run(out: Path, met: dict[str, dict[float, list[int]]], seeds: list[int]) -> None:
    """A finished ``--find-capacity`` run's files: capacity.json and the per-request CSVs."""
    tiers = load_tiers()
    target = tiers["interactive"].ttft_s
    policies = {}
    for name, per_rate in met.items():
        for rate, mets in per_rate.items():
            seeded = []
            for seed, m in zip(seeds, mets, strict=True):
                recs = [RequestRecord(arrival_s=0.0, tier="interactive",
                                      first_token_s=0.1 if i < m else target + 1.0,
                                      last_token_s=target + 2.0, n_out=1, finished=True, key=i)
                        for i in range(20)]
                seeded.append((seed, recs))
            write_records_csv(requests_csv(out / name, rate), seeded, tiers)
        policies[name] = {"capacity_rps": 0.0, "capacity_rps_90": 0.0,
                          "trials": {str(r): {} for r in per_rate}}
    (out / "capacity.json").write_text(json.dumps(
        {"policies": policies, "config": {"seed": 0, "workload_seeds": seeds}}))


def test_spread_of_a_run_folder_and_its_cli(tmp_path: Path) -> None:
    met = {"slidingserve": {4.0: [20, 20, 20], 6.0: [20, 19, 20]},
           "vllm-priority": {4.0: [20, 20, 20], 6.0: [15, 16, 20]}}
    _write_run(tmp_path, met, [3, 4, 5])
    res = spread(tmp_path)
    assert res["seeds"] == [3, 4, 5] and res["reference"] == "slidingserve"
    counts = {name: {r: np.array([[[20, m]] for m in mets]) for r, mets in per_rate.items()}
              for name, per_rate in met.items()}
    assert res["policies"] == bootstrap(counts, "slidingserve")["policies"]

    cli = CliRunner().invoke(app, ["bench", "engine", "--spread", "--out", str(tmp_path)])
    assert cli.exit_code == 0, cli.output
    assert "slidingserve / best baseline" in cli.output and "[" in cli.output
    written = json.loads((tmp_path / "spread.json").read_text())
    assert written["ratio_to_best_baseline"] == res["ratio_to_best_baseline"]


def test_spread_names_what_is_missing(tmp_path: Path) -> None:
    cli = CliRunner().invoke(app, ["bench", "engine", "--spread", "--out", str(tmp_path)])
    assert cli.exit_code != 0 and "capacity.json" in cli.output
    _write_run(tmp_path, {"slidingserve": {4.0: [20, 20]}}, [0, 1])
    requests_csv(tmp_path / "slidingserve", 4.0).unlink()
    with pytest.raises(ValueError, match="per-request file"):
        spread(tmp_path)


def test_no_ratio_when_every_scheduler_fails_at_the_lowest_rate() -> None:
    counts = {"slidingserve": _counts({12.0: [90, 95], 18.0: [50, 60]}),
              "qoserve": _counts({12.0: [92, 93], 18.0: [40, 70]})}
    res = bootstrap(counts, "slidingserve")
    assert res["ratio_to_best_baseline"]["capacity_rps"] is None  # > 1% late at 12 for both
    assert res["ratio_to_best_baseline"]["capacity_rps_90"]["value"] > 0
    assert list(res["policies"]) == ["slidingserve", "qoserve"]
