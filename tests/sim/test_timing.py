"""Timing models: the simulator's clock apart from the policy's planning model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sim_factories import small_workload, specs_of, tiers

from predictor.steptrace import Provenance, StepTrace, write_steptrace
from slidingserve.latency import BatchShape, RooflineModel
from slidingserve.latency.features import F_TOTAL_TOKENS, features_of
from slidingserve.sim import SimConfig, simulate
from slidingserve.sim.config import TimingConfig
from slidingserve.sim.timing import (
    BLOCK,
    DEFAULT_NOISE_PROFILE,
    NoiseTiming,
    OracleTiming,
    ReplayTable,
    ReplayTiming,
    fit_noise,
    fit_noise_rows,
    make_timing,
    parse_plan_times,
    timing_from_options,
)

PROV = Provenance("test", "tiny", "cpu", "0")


class TokenLinear:
    """Step time 10 ms + 0.1 ms per token: hand-computable."""

    def predict(self, shape: BatchShape) -> float:
        return float(self.predict_features(features_of(shape)[None, :])[0])

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.predict_features(np.array([features_of(s) for s in shapes]))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return 0.010 + 1e-4 * X[:, F_TOTAL_TOKENS]


def _records(result):  # everything a record says about time
    return [(r.key, r.first_token_s, r.last_token_s, r.token_times, r.finished)
            for r in result.records]


def _run(timing: TimingConfig, fast_forward: bool = True, n: int = 60,
         policy: str = "slidingserve"):
    cfg = SimConfig(record_token_times=True, fast_forward=fast_forward, timing=timing)
    return simulate(small_workload(n, rate=30.0), tiers(), policy, cfg)


# -- oracle -----------------------------------------------------------------------------------
def test_oracle_times_steps_with_the_planning_model_bit_for_bit():
    lat = RooflineModel()
    clock = OracleTiming(lat)
    X = np.array([features_of(BatchShape(((64, 0),), (100, 200))),
                  features_of(BatchShape((), (5, 6, 7)))])
    assert clock.step_times(X, 0) == lat.predict_features(X).tolist()
    assert clock.step_time(X[1], 3) == float(lat.predict_features(X[1][None, :])[0])


def test_default_timing_is_the_oracle_and_seed_free():
    assert SimConfig().timing == TimingConfig()
    base = _run(TimingConfig())
    assert base.stats["timing"] == "oracle"
    assert _records(_run(TimingConfig(seed=9))) == _records(base)


# -- noise ------------------------------------------------------------------------------------
def test_noise_is_reproducible_by_seed_and_differs_across_seeds():
    a = _run(TimingConfig(kind="noise", noise_sigma=0.2, seed=1))
    b = _run(TimingConfig(kind="noise", noise_sigma=0.2, seed=1))
    c = _run(TimingConfig(kind="noise", noise_sigma=0.2, seed=2))
    assert _records(a) == _records(b)
    assert _records(a) != _records(c)
    assert a.stats["timing"] == "noise(sigma=0.2)"


def test_noise_with_fast_forward_times_steps_as_stepping_one_by_one():
    cfg = TimingConfig(kind="noise", noise_sigma=0.3, seed=4)
    on, off = _run(cfg, fast_forward=True), _run(cfg, fast_forward=False)
    assert on.stats["fast_forwarded_steps"] > 0
    assert _records(on) == _records(off)


def test_noise_sigma_zero_is_the_oracle():
    assert _records(_run(TimingConfig(kind="noise", noise_sigma=0.0))) == _records(
        _run(TimingConfig()))


def test_noise_draws_depend_on_seed_replica_and_step_only():
    lat = TokenLinear()
    X = np.tile(features_of(BatchShape((), (10,))), (BLOCK + 10, 1))
    a = NoiseTiming(lat, 0.0, 0.5, seed=3, replica=0)
    whole = a.step_times(X, 0)  # spans two blocks
    fresh = NoiseTiming(lat, 0.0, 0.5, seed=3, replica=0)
    assert [fresh.step_time(X[j], j) for j in (BLOCK + 5, 7, BLOCK - 1)] == [
        whole[BLOCK + 5], whole[7], whole[BLOCK - 1]]
    other = NoiseTiming(lat, 0.0, 0.5, seed=3, replica=1).step_times(X, 0)
    assert other != whole
    assert fresh.step_times(X[:0], 9) == []
    logs = np.log(np.array(whole) / lat.predict_features(X))
    assert abs(np.std(logs) - 0.5) < 0.03 and abs(np.median(logs)) < 0.03


def test_fitted_sigma_is_the_pooled_within_shape_spread_of_log_times():
    a = features_of(BatchShape(((32, 0),), ()))
    b = features_of(BatchShape((), (100, 100)))
    c = features_of(BatchShape((), (7,)))
    X = np.array([a, a, a, b, b, c])
    t = np.array([0.01, 0.01 * math.exp(0.2), 0.01 * math.exp(-0.2),
                  0.02, 0.02 * math.exp(0.1), 0.5])  # c is measured once: not used
    fit = fit_noise_rows(X, t)
    # shape a: log deviations 0, +-0.2 around its mean; shape b: +-0.05 around its mean
    assert fit.sigma == pytest.approx(math.sqrt((0.08 + 0.005) / (5 - 2)))
    assert (fit.rows, fit.shapes) == (5, 2)
    with pytest.raises(ValueError, match="measured twice"):
        fit_noise_rows(X[[0, 3, 5]], t[[0, 3, 5]])


def test_fit_noise_reads_repeats_of_the_chosen_runs(tmp_path: Path):
    a = features_of(BatchShape((), (50,)))
    X = np.array([a, a, a, a])
    t = [0.01, 0.01 * math.exp(0.1), 0.03, 0.03 * math.exp(0.4)]
    path = write_steptrace(StepTrace.from_arrays(X, t, PROV, {"run": [1, 1, 2, 2],
                                                              "repeat": [0, 1, 0, 1]}),
                           tmp_path / "p.csv")
    assert fit_noise(path, runs=(1,)).sigma == pytest.approx(math.sqrt(2 * 0.05**2))
    assert fit_noise(path, runs=None).rows == 4


@pytest.mark.skipif(not DEFAULT_NOISE_PROFILE.exists(), reason="no CPU step profile")
def test_default_fit_is_the_documented_figure():
    fit = fit_noise()
    assert round(fit.sigma, 3) == 0.318  # docs/simulator.md
    assert timing_from_options("noise").noise_sigma == round(fit.sigma, 4)


# -- replay -----------------------------------------------------------------------------------
def _table() -> ReplayTable:
    s1 = features_of(BatchShape((), (100,)))
    s2 = features_of(BatchShape(((256, 0),), ()))
    return ReplayTable.from_rows(np.array([s1, s2, s1]), np.array([0.020, 0.090, 0.022]))


def test_replay_returns_measured_times_of_an_exact_shape():
    table = _table()
    clock = ReplayTiming(TokenLinear(), 0.0, table, seed=0, replica=0)
    x1, x2 = table.X
    times = {clock.step_time(x1, j) for j in range(200)}
    assert times == {0.020, 0.022}  # its two measurements, picked by the seeded draw
    assert clock.step_time(x2, 5) == 0.090


def test_replay_scales_the_nearest_shape_for_an_unseen_one():
    table = _table()
    lat = TokenLinear()
    clock = ReplayTiming(lat, 0.0, table, seed=0, replica=0)
    x = features_of(BatchShape(((200, 0),), ()))  # nearest: the 256-token prefill
    assert clock.nearest(x) == 1
    expected = 0.090 * (lat.predict_features(x[None])[0] / lat.predict_features(table.X[1:2])[0])
    assert clock.step_time(x, 0) == pytest.approx(expected)
    X = np.array([x, table.X[0], x])
    assert clock.step_times(X, 10) == [clock.step_time(row, 10 + j) for j, row in enumerate(X)]


def test_replay_run_is_reproducible_and_fast_forward_exact(tmp_path: Path):
    lat = RooflineModel()
    shapes = [BatchShape((), tuple(range(50, 50 + 8 * k, 8))) for k in range(1, 20)]
    shapes += [BatchShape(((c, 0),), ()) for c in (16, 64, 256, 1024)]
    X = np.array([features_of(s) for s in shapes])
    y = lat.predict_features(X) * 1.3
    path = write_steptrace(StepTrace.from_arrays(X, y, PROV), tmp_path / "steps.csv")
    cfg = TimingConfig(kind="replay", replay=path, seed=1)
    on, off = _run(cfg, True, policy="vllm-fcfs"), _run(cfg, False, policy="vllm-fcfs")
    assert _records(on) == _records(off)
    assert on.stats["timing"] == "replay(steps.csv)"


def test_correlated_noise_is_stationary_reproducible_and_exact_under_fast_forward():
    lat = TokenLinear()
    X = np.tile(features_of(BatchShape((), (10,))), (3 * BLOCK, 1))
    a = NoiseTiming(lat, 0.0, 0.3, seed=5, replica=0, rho=0.8)
    whole = a.step_times(X, 0)  # three blocks, each continuing from the last
    z = np.log(np.array(whole) / lat.predict_features(X)) / 0.3
    assert abs(np.std(z) - 1.0) < 0.15 and abs(np.mean(z)) < 0.2
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1] - 0.8) < 0.05
    # a pure function of (seed, replica, step): a fresh clock asked out of order agrees
    fresh = NoiseTiming(lat, 0.0, 0.3, seed=5, replica=0, rho=0.8)
    assert [fresh.step_time(X[j], j) for j in (2 * BLOCK + 3, 11, BLOCK)] == pytest.approx(
        [whole[2 * BLOCK + 3], whole[11], whole[BLOCK]], rel=1e-12)
    independent = NoiseTiming(lat, 0.0, 0.3, seed=5, replica=0).step_times(X, 0)
    zi = np.log(np.array(independent) / lat.predict_features(X)) / 0.3
    assert abs(np.corrcoef(zi[:-1], zi[1:])[0, 1]) < 0.05
    cfg = TimingConfig(kind="noise", noise_sigma=0.3, noise_rho=0.7, seed=4)
    on, off = _run(cfg, fast_forward=True), _run(cfg, fast_forward=False)
    assert on.stats["fast_forwarded_steps"] > 0
    assert _records(on) == _records(off)
    assert on.stats["timing"] == "noise(sigma=0.3, rho=0.7)"


def test_scale_multiplies_execution_but_not_planning_time():
    specs = specs_of([(0.0, 100, 2, "interactive")])
    lat = TokenLinear()
    r = simulate(specs, tiers(), "vllm-fcfs",
                 SimConfig(timing=TimingConfig(scale=1.5, plan_s=0.002)), lat).records[0]
    assert (r.first_token_s, r.last_token_s) == pytest.approx(
        (0.030 + 0.002, 0.032 + 0.0101 * 1.5 + 0.002))
    assert TimingConfig(scale=1.5).label() == "oracle x1.5"
    # a separate scale for steps with prefill tokens: the prefill step x2, the decode x1.5
    r2 = simulate(specs, tiers(), "vllm-fcfs",
                  SimConfig(timing=TimingConfig(scale=1.5, prefill_scale=2.0)), lat).records[0]
    assert (r2.first_token_s, r2.last_token_s) == pytest.approx((0.040, 0.040 + 0.0101 * 1.5))
    assert TimingConfig(prefill_scale=2.0).label() == "oracle x1 (prefill x2)"
    with pytest.raises(ValidationError, match="noise_rho"):
        TimingConfig(noise_rho=0.5)


# -- planning time ----------------------------------------------------------------------------
def test_planning_time_is_added_to_every_step():
    # One request, prompt 100, 2 output tokens: a 100-token prefill (10 + 10 ms), then one
    # decode (10 + 0.01 ms); each step 2 ms longer with planning time.
    specs = specs_of([(0.0, 100, 2, "interactive")])
    lat = TokenLinear()

    def times(timing: TimingConfig) -> tuple[float, float]:
        r = simulate(specs, tiers(), "vllm-fcfs", SimConfig(timing=timing), lat).records[0]
        assert r.first_token_s is not None and r.last_token_s is not None
        return r.first_token_s, r.last_token_s

    assert times(TimingConfig()) == pytest.approx((0.020, 0.020 + 0.0101))
    assert times(TimingConfig(plan_s=0.002)) == pytest.approx((0.022, 0.022 + 0.0121))
    per_policy = TimingConfig(plan_s=0.5, plan_s_by_policy={"vllm-fcfs": 0.002})
    assert times(per_policy) == pytest.approx((0.022, 0.022 + 0.0121))


def test_make_timing_picks_the_policy_planning_time():
    cfg = TimingConfig(plan_s=0.001, plan_s_by_policy={"qoserve": 0.003})
    assert make_timing(cfg, TokenLinear(), 0, "qoserve").plan_s == 0.003
    assert make_timing(cfg, TokenLinear(), 0, "slidingserve").plan_s == 0.001


# -- config, labels, options ------------------------------------------------------------------
def test_labels_say_which_timing_model_ran():
    assert TimingConfig(kind="noise", noise_sigma=0.08, plan_s=0.0018).label() == (
        "noise(sigma=0.08) +plan 1.8ms")
    both = TimingConfig(plan_s_by_policy={"slidingserve": 0.0018, "qoserve": 0.002})
    assert both.label() == "oracle +plan qoserve 2ms, slidingserve 1.8ms"
    assert both.label("slidingserve") == "oracle +plan 1.8ms"
    assert both.label("edf") == "oracle"


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="replay"):
        TimingConfig(kind="replay")
    with pytest.raises(ValidationError, match="noise_sigma"):
        TimingConfig(noise_sigma=0.1)
    with pytest.raises(ValidationError, match="slidingserve"):
        TimingConfig(plan_s_by_policy={"slidingserve": -1.0})
    with pytest.raises(ValidationError):
        TimingConfig(kind="jitter")  # type: ignore[arg-type]


def test_plan_time_option_parsing():
    assert parse_plan_times("1.8") == (0.0018, {})
    assert parse_plan_times("slidingserve=1.8, qoserve=2,0.5") == (
        0.0005, {"slidingserve": 0.0018, "qoserve": 0.002})
    with pytest.raises(ValueError, match="POLICY=MS"):
        parse_plan_times("fast")
    with pytest.raises(ValueError, match="unknown policy"):
        timing_from_options(plan_time_ms="nosuch=1")
    with pytest.raises(ValueError, match="does not exist"):
        timing_from_options("replay", replay=Path("/nonexistent/steps.csv"))



def test_policies_plan_with_the_planning_time_the_timing_adds():
    from slidingserve.latency import StepOverhead
    from slidingserve.sim.simulator import _planning_policy, _policy_factory

    lat = TokenLinear()
    x = features_of(BatchShape(decode_ctx=(100,)))[None, :]
    factory = _policy_factory("slidingserve", None)
    same, none = _planning_policy(factory, lat, TimingConfig())
    assert same.latency is lat and none is None
    aware, overhead = _planning_policy(factory, lat, TimingConfig(plan_s=0.5, plan_s_by_policy={
        "slidingserve": 0.002}))
    assert aware.latency is overhead
    assert isinstance(aware.latency, StepOverhead)
    assert aware.latency.predict_features(x)[0] == pytest.approx(
        lat.predict_features(x)[0] + 0.002)
    with pytest.raises(ValueError, match="overhead"):
        StepOverhead(lat, -0.001)


def test_planning_time_by_requests_held():
    """With ``plan_s_by_held`` a step's planning time follows the requests the replica held
    when it planned it; fast-forwarded decode runs time their steps exactly as stepping."""
    cfg = TimingConfig(plan_s_by_held=((0, 0.001), (4, 0.003)))
    t = make_timing(cfg, TokenLinear(), 0, "vllm-fcfs")
    x = features_of(BatchShape(decode_ctx=(100, 100)))
    assert t.plan_time(0) == 0.001 and t.plan_time(3) == 0.001 and t.plan_time(50) == 0.003
    run = TokenLinear().predict_features(x[None, :])[0]
    assert t.step_time(x, 0) == pytest.approx(run + 0.001)  # default: the 2 requests it runs
    assert t.step_time(x, 0, held=9) == pytest.approx(run + 0.003)
    X = np.stack([features_of(BatchShape(decode_ctx=(100,) * k)) for k in (5, 4, 3)])
    assert t.step_times(X, 0) == [t.step_time(row, 0) for row in X]
    assert cfg.label() == "oracle +plan 1-3ms by queue"
    assert _records(_run(cfg, fast_forward=True)) == _records(_run(cfg, fast_forward=False))
    for bad in (((1, 0.001),), ((0, 0.001), (0, 0.002)), ((0, -1.0),)):
        with pytest.raises(ValidationError, match="plan"):
            TimingConfig(plan_s_by_held=bad)
