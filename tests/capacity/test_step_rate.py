"""The step-rate bound: exact fit on affine models, the equation it solves, and a bound that
simulated schedules cannot pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slidingserve.capacity.step_rate import decode_step_fit, step_rate_bound
from slidingserve.latency import RooflineModel
from slidingserve.latency.linear import BinnedLinearConfig, BinnedLinearModel, LinearBin
from slidingserve.sim import SimConfig, simulate
from slidingserve.slo import SLOTier, TierSet, load_tiers, scale_tiers
from slidingserve.workload import RequestSpec


def _linear(intercept: float, per_decode: float, per_context: float = 0.0) -> BinnedLinearModel:
    # the schema's decode context counts the token each decode writes: DC = sum(ctx) - D
    return BinnedLinearModel(BinnedLinearConfig(bins=(LinearBin(
        intercept=intercept, decode_tokens=per_decode + per_context,
        decode_context=per_context, prefill_tokens=1e-6),)))


def _one_tier(tpot_s: float, judge: list[str] | None = None) -> TierSet:
    return TierSet([SLOTier("chat", ttft_s=2.0, tpot_s=tpot_s, e2e_s=None, weight=1.0,
                            priority=0, share=1.0, judge=judge)], source="test")


def test_the_roofline_fit_is_exact_and_reads_the_weights_and_the_kv() -> None:
    m = RooflineModel()
    c = m.config
    bw = c.hbm_bytes_per_s * c.mbu
    fit = decode_step_fit(m)
    assert fit["fit_max_rel_error"] < 1e-9
    weights = c.num_params * c.bytes_per_param
    assert fit["fixed_step_s"] == pytest.approx(c.overhead_s + weights / bw)
    kv = 2 * c.num_layers * c.num_kv_heads * c.head_dim * c.bytes_per_param
    assert fit["per_context_token_s"] == pytest.approx(kv / bw)


def test_the_bound_fills_each_second_with_fixed_and_decode_parts() -> None:
    model = _linear(0.010, 2e-4, 1e-6)
    prompt, output = np.full(50, 100), np.full(50, 11)
    b = step_rate_bound(model, _one_tier(0.02), prompt, output)
    assert b is not None and b["tier"] == "chat" and b["steps_per_s"] == pytest.approx(50.0)
    per_request = 2e-4 * 10 + 1e-6 * (10 * 100 + 10 * 11 / 2)
    assert b["per_request_decode_s"] == pytest.approx(per_request)
    r = b["rate_rps"]
    busy = 1.0 - math.exp(-r * 10 * 0.02)
    assert busy * 0.010 / 0.02 + r * per_request == pytest.approx(1.0, rel=1e-6)


def test_tighter_tpot_lowers_the_bound_and_a_step_floor_above_it_leaves_nothing() -> None:
    prompt, output = np.full(50, 100), np.full(50, 50)
    rates = [step_rate_bound(RooflineModel(), scale_tiers(load_tiers(None), s), prompt, output)
             for s in (0.25, 0.5, 1.0)]
    assert all(r is not None and r["tier"] == "interactive" for r in rates)
    assert rates[0]["rate_rps"] < rates[1]["rate_rps"] < rates[2]["rate_rps"]
    floor = step_rate_bound(_linear(0.030, 1e-4), _one_tier(0.02), prompt, output)
    assert floor is not None and floor["rate_rps"] == 0.0
    # no tier judged on its TPOT: nothing sets the step rate
    assert step_rate_bound(RooflineModel(), _one_tier(0.02, ["ttft"]), prompt, output) is None


@pytest.mark.parametrize("policy", ["slidingserve", "qoserve"])
def test_no_simulated_schedule_keeps_the_tpot_above_the_bound(policy: str) -> None:
    model, tiers, n = _linear(0.010, 1e-3), _one_tier(0.02), 600
    bound = step_rate_bound(model, tiers, np.full(n, 10), np.full(n, 21))
    assert bound is not None and bound["rate_rps"] == pytest.approx(25.0, rel=1e-3)
    rng = np.random.default_rng(0)
    gaps = rng.exponential(1.0, n)

    def attainment(rate: float) -> float:
        arrivals = np.cumsum(gaps / rate)
        specs = [RequestSpec(key=i, arrival_s=float(a), prompt_len=10, output_len=21,
                             tier="chat") for i, a in enumerate(arrivals)]
        res = simulate(specs, tiers, policy, SimConfig(), latency=model)
        return float(np.mean([r.meets_slo(tiers["chat"]) for r in res.records]))

    assert attainment(0.5 * bound["rate_rps"]) >= 0.95
    assert attainment(1.1 * bound["rate_rps"]) < 0.5


def test_the_cli_prints_a_line_per_scale_and_names_a_bad_value(capsys) -> None:
    from slidingserve.capacity.step_rate import main

    assert main(["--slo-scale", "0.25,1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["SLO x0.25", "SLO x1"]
    assert all("req/s (interactive" in line for line in out)
    with pytest.raises(SystemExit):
        main(["--slo-scale", "0,1"])
    assert "'0,1'" in capsys.readouterr().err
