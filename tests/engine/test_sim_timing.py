"""The engine benchmark's simulator timing, measured from the run's own step traces."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictor.steptrace import Provenance, StepTrace, write_steptrace
from slidingserve.engine.sim_timing import (
    MIN_BIN_STEPS,
    held_table,
    measured_noise,
    nearest_key,
    plan_by_held,
    plan_time_s,
    step_fit,
    trial_step_fits,
    trial_timing,
    trial_windows,
)
from slidingserve.latency import BatchShape
from slidingserve.latency.features import features_of


class Flat:
    """Every step predicted at 10 ms."""

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), 0.010)


def test_noise_is_the_spread_of_log_measured_over_predicted(tmp_path: Path) -> None:
    X = np.array([features_of(BatchShape((), (10 * k,))) for k in range(1, 5)])
    ratios = [1.0, math.exp(0.1), math.exp(-0.1), 1.0]
    for i, folder in enumerate(("a", "b")):  # one trace per scheduler, pooled
        rows = slice(2 * i, 2 * i + 2)
        write_steptrace(StepTrace.from_arrays(X[rows], 0.010 * np.array(ratios[rows]) * 1.2,
                                              Provenance("e", "m", "h", "v")),
                        tmp_path / folder / "steps.csv")
    noise = measured_noise(tmp_path, Flat())  # type: ignore[arg-type]
    assert noise is not None and noise["steps"] == 4
    assert noise["sigma"] == pytest.approx(np.std([0, 0.1, -0.1, 0], ddof=1))
    assert noise["median_ratio"] == pytest.approx(1.2)
    assert measured_noise(tmp_path / "none", Flat()) is None  # type: ignore[arg-type]


def test_trial_timing_from_overhead_figures() -> None:
    overhead = {"sched_ms": {"mean": 2.5}, "plan_ms": {"mean": 1.5}, "plan_cpu_ms": {"mean": 0.5}}
    assert plan_time_s(overhead, "sched") == pytest.approx(0.0025)
    assert plan_time_s(overhead, "plan-cpu") == pytest.approx(0.0005)
    assert plan_time_s(None, "sched") == 0.0  # vLLM's own scheduler: no trace
    assert plan_time_s(overhead, "none") == 0.0
    measured = trial_timing("measured", {"sigma": 0.123456}, 0.002)
    assert measured.label() == "noise(sigma=0.123) +plan 2ms"
    assert trial_timing("measured", None, 0.002).label() == "oracle +plan 2ms"
    assert trial_timing("oracle", {"sigma": 0.1}, 0.002).label() == "oracle"
    trials = {"3.0": {"x": 3}, "9.0": {"x": 9}}
    assert trials[nearest_key(trials, 7.0) or ""] == {"x": 9} and nearest_key({}, 1.0) is None


def test_step_fit_measures_ratio_spread_and_runs() -> None:
    rng = np.random.default_rng(0)
    n, rho = 20_000, 0.6
    z = np.zeros(n)
    for j in range(1, n):
        z[j] = rho * z[j - 1] + math.sqrt(1 - rho * rho) * rng.standard_normal()
    predicted = np.full(n, 0.010)
    fit = step_fit(predicted * 1.3 * np.exp(0.2 * z), predicted)
    assert fit is not None and fit["steps"] == n
    assert fit["ratio"] == pytest.approx(1.3, rel=0.02)
    assert fit["sigma"] == pytest.approx(0.2, rel=0.1)
    assert fit["rho"] == pytest.approx(rho, abs=0.03)
    alternating = step_fit(predicted[:100] * np.where(np.arange(100) % 2, 1.1, 0.9),
                           predicted[:100])
    assert alternating is not None and alternating["rho"] == 0.0  # negative: clipped
    assert step_fit(np.ones(2), np.ones(2)) is None
    # decode-only and prefill steps measured apart; the spread is around each class's median
    prefill = np.arange(n) % 3 == 0
    two = step_fit(predicted * np.where(prefill, 1.0, 0.8) * np.exp(0.2 * z), predicted, prefill)
    assert two is not None
    assert two["ratio"] == pytest.approx(0.8, rel=0.03)
    assert two["prefill_ratio"] == pytest.approx(1.0, rel=0.03)
    assert two["sigma"] == pytest.approx(0.2, rel=0.1)


def test_trial_windows_by_wall_clock_or_by_step_counts() -> None:
    ts = np.arange(10.0)
    by_time = trial_windows({"6.0": {"window_s": [2, 4.5]}, "12.0": {"window_s": [5, 9]}}, ts)
    assert by_time["6.0"].nonzero()[0].tolist() == [2, 3, 4]
    assert by_time["12.0"].nonzero()[0].tolist() == [5, 6, 7, 8, 9]
    # older runs: ascending rates back to back after the calibration's steps, counted from
    # the end ("9.0" sorts after "12.0" as text, not as a rate)
    by_count = trial_windows({"12.0": {"scheduler_overhead": {"steps": 4}},
                              "9.0": {"scheduler_overhead": {"steps": 3}}}, ts)
    assert by_count["9.0"].nonzero()[0].tolist() == [3, 4, 5]
    assert by_count["12.0"].nonzero()[0].tolist() == [6, 7, 8, 9]


def test_measured_trial_timing_from_a_trace(tmp_path: Path) -> None:
    X = np.array([features_of(BatchShape((), (10 * k,))) for k in range(1, 9)])
    latency = 0.010 * np.array([1.2, 1.2, 1.2, 1.2, 2.0, 2.0, 2.2, 1.8])
    trace = StepTrace.from_arrays(X, latency, Provenance("e", "m", "h", "v"),
                                  {"timestamp_s": np.arange(8.0)})
    path = write_steptrace(trace, tmp_path / "steps.csv")
    trials = {"3.0": {"window_s": [0, 3.5]}, "9.0": {"window_s": [4, 8]}}
    fits = trial_step_fits(path, trials, Flat())  # type: ignore[arg-type]
    assert fits["3.0"] is not None and fits["3.0"]["ratio"] == pytest.approx(1.2)
    fit = fits["9.0"]
    assert fit is not None and fit["median_ratio"] == pytest.approx(2.0)
    # the scale is set so that the simulated lognormal noise keeps the measured mean ratio
    # (2.0: the deviations 1.1 and 0.9 cancel)
    assert fit["ratio"] * math.exp(fit["sigma"] ** 2 / 2) == pytest.approx(2.0)
    timing = trial_timing("measured-trial", fit, 0.001, planner_scale=1.25)
    assert timing.scale == pytest.approx(fit["ratio"] / 1.25, abs=1e-4)
    assert timing.plan_s == 0.001
    assert timing.label().startswith("noise(sigma=") and "x1.59" in timing.label()


def test_a_heavy_tail_raises_the_scale_above_the_median() -> None:
    """A slow spell (a few steps 4x slower) leaves the median alone but not the work done per
    second: the fitted scale keeps the measured mean step time."""
    ratios = np.array([1.0] * 95 + [4.0] * 5)
    fit = step_fit(ratios * 0.01, np.full(100, 0.01))
    assert fit is not None and fit["median_ratio"] == pytest.approx(1.0)
    assert fit["ratio"] * math.exp(fit["sigma"] ** 2 / 2) == pytest.approx(ratios.mean())


def _finished_run(out: Path, step_s: float = 0.004) -> dict[str, Any]:
    """A finished ``find_capacity`` run in ``out`` (one scheduler, one trial at 2 req/s, its
    step trace: every step measured at ``step_s``), written as the bench writes it; returns its
    ``capacity.json``."""
    import json

    from slidingserve.engine.bench_config import BenchConfig

    cfg = BenchConfig(duration_s=3.0, drain_s=10.0, max_prompt=128, max_output=8,
                      limit_requests=200)
    X = np.array([features_of(BatchShape((), (10 * k,))) for k in range(1, 7)]
                 + [features_of(BatchShape(((64, 0),), ()))] * 3)
    trace = StepTrace.from_arrays(X, np.full(len(X), step_s), Provenance("e", "m", "h", "v"),
                                  {"timestamp_s": np.arange(float(len(X))),
                                   "sched_s": np.full(len(X), 0.001)})
    write_steptrace(trace, out / "slidingserve" / "steps.csv")
    overhead = {"sched_ms": {"mean": 1.0}, "plan_ms": {"mean": 0.5},
                "plan_cpu_ms": {"mean": 0.4}, "steps": len(X)}
    run = {"config": json.loads(cfg.model_dump_json()),
           "calibration": {"ttft_s": 0.05, "decode_step_s": 0.01, "prompt_len": 50},
           "policies": {"slidingserve": {
               "capacity_rps": 1.0, "capacity_rps_90": 2.0,
               "trials": {"2.0": {"attainment": 0.9, "seeds": {"0": 0.9},
                                  "worst_tier_violation_rate": 0.1,
                                  "scheduler_overhead": overhead, "window_s": [0, 100]}}}}}
    (out / "capacity.json").write_text(json.dumps(run))
    return run


def test_repredict_recomputes_a_finished_run_without_an_engine(tmp_path: Path) -> None:
    import asyncio
    import json

    from slidingserve.engine.bench_config import BenchConfig, Calibration
    from slidingserve.engine.predict import repredict

    run = _finished_run(tmp_path)
    cfg = BenchConfig(**run["config"])
    steps = 9  # in _finished_run's trace
    assert Calibration(**run["calibration"]).ttft_s == 0.05
    data = asyncio.run(repredict(tmp_path, "measured-trial", "sched"))
    result = data["policies"]["slidingserve"]
    trial = result["trials"]["2.0"]
    assert 0.0 <= trial["simulated"]["slo_attainment"] <= 1.0
    assert "rho=" in trial["simulated"]["timing"] and "+plan 1ms" in trial["simulated"]["timing"]
    assert trial["step_fit"]["steps"] == steps
    assert result["simulated"]["capacity_rps_90"] > 0
    on_disk = json.loads((tmp_path / "capacity.json").read_text())
    assert on_disk["config"]["sim_timing"] == "measured-trial"
    # the engine's throughput limit (no SLO) on the timing of the one scheduler that ran
    limit = on_disk["throughput_limit"]
    assert limit["timing_of"] == "slidingserve" and limit["timing_rate_rps"] == 2.0
    assert limit["budget"] == cfg.max_num_batched_tokens and limit["rate_rps"] > 2.0
    from typer.testing import CliRunner

    from slidingserve.cli import app

    cli = CliRunner().invoke(app, ["bench", "engine", "--repredict", "--out", str(tmp_path)])
    assert cli.exit_code == 0, cli.output
    share = 2.0 / json.loads((tmp_path / "capacity.json").read_text())["throughput_limit"][
        "rate_rps"]
    assert "throughput limit (simulator, no SLO" in cli.output
    assert f"90% capacity as a share of it: slidingserve {share:.0%}" in cli.output
    assert "step_fit" not in asyncio.run(repredict(tmp_path, "oracle", "sched"))[
        "policies"]["slidingserve"]["trials"]["2.0"]
    with pytest.raises(ValueError, match=r"capacity\.json"):
        asyncio.run(repredict(tmp_path / "nowhere", "oracle", "sched"))
    # other policies on the same measured timing: the run's scheduler first, then each variant
    from slidingserve.engine.predict import predict_variants

    table = predict_variants(tmp_path, {"fcfs-order": ("slidingserve", {"use_sorter": False})})
    labels = [(r["label"], r["rate_rps"]) for r in table["rows"]]
    assert labels == [("slidingserve", 2.0), ("fcfs-order", 2.0)]
    assert table["rows"][0]["measured"] == 0.9 and table["rows"][1]["measured"] is None
    assert table["rows"][1]["overrides"] == {"use_sorter": False}
    assert all(0.0 <= r["slo_attainment"] <= 1.0 for r in table["rows"])
    assert json.loads((tmp_path / "variants.json").read_text())["rows"][1]["label"] == "fcfs-order"
    with pytest.raises(ValueError, match="did not run"):
        predict_variants(tmp_path, {}, timing_of="qoserve")


def test_the_engines_throughput_limit_falls_as_its_steps_slow_down(tmp_path: Path) -> None:
    """An engine whose steps were measured twice as long carries about half the requests/s."""
    import asyncio

    from slidingserve.engine.predict import repredict

    limits = []
    for step_s in (0.004, 0.008):
        out = tmp_path / f"step{step_s:g}"
        _finished_run(out, step_s)
        limit = asyncio.run(repredict(out, "measured-workload", "sched"))["throughput_limit"]
        assert limit is not None
        limits.append(limit["rate_rps"])
    assert 0.35 * limits[0] <= limits[1] <= 0.7 * limits[0], limits


def test_cycle_overhead_is_the_busy_engine_time_outside_the_model() -> None:
    from slidingserve.engine.sim_timing import cycle_overhead_s

    # steps of 10 ms ending every 11 ms (1 ms outside the model), then an idle second
    ends = np.array([0.010, 0.021, 0.032, 1.5, 1.511])
    assert cycle_overhead_s(ends, np.full(5, 0.010)) == pytest.approx(0.001)
    assert cycle_overhead_s(np.array([0.0, 5.0]), np.full(2, 0.010)) is None
    assert plan_time_s({"sched_ms": {"mean": 2.0}}, "cycle", {"cycle_s": 0.003}) == 0.003
    assert plan_time_s({"sched_ms": {"mean": 2.0}}, "cycle", None) == pytest.approx(0.002)
    from slidingserve.engine.bench_config import BenchConfig
    with pytest.raises(ValueError, match="cycle"):
        BenchConfig(sim_timing="measured", sim_plan_time="cycle")


def test_planning_time_by_requests_held_from_a_trace(tmp_path: Path) -> None:
    """Planning time grows with the queue: each bin of requests held gets its own mean; a bin
    with too few steps takes the one below's; the table reaches the simulator's timing."""
    n = 3 * MIN_BIN_STEPS
    held = np.array([1] * n + [20] * n + [100] * 3, dtype=float)
    sched = np.array([0.0002] * n + [0.0015] * n + [0.009] * 3)
    table = plan_by_held(sched, held)
    assert table[0] == [0, pytest.approx(0.0002)]
    assert dict((lo, v) for lo, v in table)[16] == pytest.approx(0.0015)
    assert table[-1] == [128, pytest.approx(0.0015)]  # 3 steps at 100 held: too few
    X = np.array([features_of(BatchShape((), (10,)))] * len(held))
    trace = StepTrace.from_arrays(X, np.full(len(held), 0.01), Provenance("e", "m", "h", "v"), {
        "timestamp_s": np.arange(len(held), dtype=float), "sched_s": sched,
        "num_running": held, "num_waiting": np.zeros(len(held))})
    path = write_steptrace(trace, tmp_path / "steps.csv")
    fit = trial_step_fits(path, {"5.0": {"window_s": [0, len(held)]}}, Flat())["5.0"]
    assert fit is not None and fit["plan_by_held"] == table
    timing = trial_timing("measured-trial", fit, 0.001, 1.0, held_table(fit, "sched"))
    assert timing.plan_s_by_held[0] == (0, pytest.approx(0.0002))
    assert held_table(fit, "plan") == () and held_table(None, "sched") == ()


def _three_workloads(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A trace of one trial running three workloads back to back, the second on a machine
    twice as slow: 40 steps each, 10 ms apart, a 2 s idle gap between workloads."""
    X = np.array([features_of(BatchShape((), (10,)))] * 120)
    ratio = np.repeat([1.0, 2.0, 1.0], 40) * np.exp(np.tile([0.01, -0.01], 60))
    ts = np.concatenate([t0 + 0.01 * np.arange(40) for t0 in (100.0, 102.4, 104.8)])
    trace = StepTrace.from_arrays(X, 0.010 * ratio, Provenance("e", "m", "h", "v"),
                                  {"timestamp_s": ts})
    path = write_steptrace(trace, tmp_path / "steps.csv")
    trial = {"window_s": [99.0, 106.0], "seeds": {"3": 0.9, "4": 0.5, "5": 0.9}}
    return path, trial


def test_each_workload_gets_its_own_step_timing(tmp_path: Path) -> None:
    """A slow spell during one workload times that workload alone; the trial-wide fit spreads
    it over all three."""
    from slidingserve.engine.sim_timing import fitted_timing, workload_windows

    path, trial = _three_workloads(tmp_path)
    fit = trial_step_fits(path, {"6.0": trial}, Flat(), by_workload=True)["6.0"]
    assert fit is not None and set(fit["workloads"]) == {"3", "4", "5"}
    assert [fit["workloads"][s]["steps"] for s in ("3", "4", "5")] == [40, 40, 40]
    assert fit["workloads"]["4"]["ratio"] == pytest.approx(2.0, rel=0.01)
    assert fit["workloads"]["3"]["ratio"] == pytest.approx(1.0, rel=0.01)
    timing = fitted_timing("measured-workload", fit, None, "sched")
    assert isinstance(timing, dict) and timing[4].scale == pytest.approx(2.0, rel=0.01)
    assert timing[5].scale == pytest.approx(1.0, rel=0.01)
    whole = fitted_timing("measured-trial", fit, None, "sched")
    assert not isinstance(whole, dict) and whole.scale == pytest.approx(fit["ratio"], abs=1e-4)
    # windows recorded by the run win over the cut at idle gaps
    ts = np.concatenate([t0 + 0.01 * np.arange(40) for t0 in (100.0, 102.4, 104.8)])
    recorded = {**trial, "seed_windows_s": {"3": [99.0, 101.0], "4": [101.0, 106.0]}}
    masks = workload_windows(recorded, ts, np.ones(len(ts), dtype=bool))
    assert [int(m.sum()) for m in masks.values()] == [40, 80]
    one = workload_windows({"seeds": {"7": 1.0}}, ts, np.ones(len(ts), dtype=bool))
    assert int(one[7].sum()) == len(ts)


def test_a_trial_simulates_each_workload_on_its_own_timing() -> None:
    """``simulate_trial`` takes a timing per workload seed: slower steps for one workload
    lower the pooled attainment against the same trial on the fast timing."""
    from slidingserve.engine.bench_config import BenchConfig, Calibration
    from slidingserve.engine.predict import simulate_trial
    from slidingserve.latency.roofline import RooflineConfig, RooflineModel
    from slidingserve.sim.config import TimingConfig

    cfg = BenchConfig(duration_s=4.0, drain_s=10.0, max_prompt=256, max_output=16,
                      workload_seeds=(0, 1), sim_noise_draws=1)
    tiers = Calibration(ttft_s=0.05, decode_step_s=0.01, prompt_len=100).tiers(cfg.scales)
    model = (RooflineModel(RooflineConfig()), "roofline")
    fast = TimingConfig(kind="noise", noise_sigma=0.0, scale=1.0, prefill_scale=1.0)
    slow = fast.model_copy(update={"scale": 40.0, "prefill_scale": 40.0})
    same = simulate_trial(cfg, "slidingserve", 20.0, tiers, 1.0, model, {0: fast, 1: fast})
    mixed = simulate_trial(cfg, "slidingserve", 20.0, tiers, 1.0, model, {0: fast, 1: slow})
    assert mixed["slo_attainment"] < same["slo_attainment"]
    assert set(mixed["timing_config_by_seed"]) == {"0", "1"}
    assert mixed["timing_config_by_seed"]["1"]["scale"] == 40.0


def test_slow_spells_count_runs_of_slow_steps_not_scattered_ones():
    from slidingserve.engine.sim_timing import slow_steps

    predicted = np.full(400, 0.004)
    latency = predicted * 1.2
    latency[100:125] *= 3.0  # two spells of 25 steps: at 3x and at 4x
    latency[300:325] *= 4.0
    stamps = np.cumsum(latency)  # the engine busy throughout: each step ends as recorded
    fit = step_fit(latency, predicted, timestamps=stamps)
    assert fit is not None
    assert fit["slow_spell_s"] == pytest.approx(float(latency[100:125].sum()
                                                      + latency[300:325].sum()))
    spells = fit["spells"]
    assert spells["count"] == 2
    assert spells["mean_s"] == pytest.approx((latency[100:125].sum()
                                              + latency[300:325].sum()) / 2)
    assert spells["rate_hz"] == pytest.approx(2 / float(latency.sum()))
    # the median of the slow steps' log ratios over the calm: between 3x and 4x
    assert spells["x"] == pytest.approx(math.sqrt(12))
    # the calm steps alone set the rest: no noise left, the ratio the calm one
    assert fit["ratio"] == pytest.approx(1.2) and fit["sigma"] == pytest.approx(0.0, abs=1e-9)
    timing = trial_timing("measured-trial", fit, 0.0)
    assert timing.spell_rate_hz == pytest.approx(spells["rate_hz"], rel=1e-3)
    assert timing.spell_x == pytest.approx(3.464) and "spells(" in timing.label()
    assert trial_timing("measured-trial", fit, 0.0, spells=False).spell_rate_hz == 0.0
    scattered = predicted * 1.2
    scattered[::3] *= 3.0  # every third step slow: no run of them
    calm = step_fit(scattered, predicted)
    assert calm is not None and calm["slow_spell_s"] == 0.0 and calm["spells"] is None
    assert trial_timing("measured-trial", calm, 0.0).spell_rate_hz == 0.0
    assert not slow_steps(np.full(10, 2.0)).any()  # too few steps for a window, however slow
