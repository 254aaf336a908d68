"""The engine benchmark's pure parts: workload scaling, calibrated tiers, knee search, CLI input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from slidingserve.engine.bench_config import BenchConfig, Calibration, TierScale, scaled_workload
from slidingserve.engine.cli import parse_schedulers
from slidingserve.engine.knee import bisect_knee, sweep_capacities, sweep_knee

TRACE = Path(__file__).resolve().parents[3] / "shared/traces/azure_llm_2023_conv.csv"


def test_calibrated_tiers_scale_the_unloaded_latency() -> None:
    cfg = BenchConfig()
    tiers = Calibration(ttft_s=0.05, decode_step_s=0.01, prompt_len=256).tiers(cfg.scales)
    assert list(tiers) == ["interactive", "standard", "batch"]
    i = tiers["interactive"]
    assert i.ttft_s == pytest.approx(0.05 * cfg.scales["interactive"].ttft_x)
    assert i.tpot_s == pytest.approx(0.01 * cfg.scales["interactive"].tpot_x)
    assert [t.priority for t in tiers.values()] == [0, 1, 2]


@pytest.mark.parametrize("trace", [None, TRACE])
def test_workload_is_scaled_to_the_small_model(trace: Path | None) -> None:
    if trace is not None and not trace.is_file():
        pytest.skip("no shared Azure trace here")
    cfg = BenchConfig(trace=trace, duration_s=50, max_prompt=512, max_output=64,
                      max_model_len=600)
    tiers = Calibration.placeholder().tiers(cfg.scales)
    specs = scaled_workload(cfg, 2.0, tiers, seed=3)
    assert len(specs) == 100
    assert all(4 <= s.prompt_len <= 512 and 2 <= s.output_len <= 64 for s in specs)
    assert all(s.prompt_len + s.output_len < 600 for s in specs)
    assert [s.arrival_s for s in specs] == sorted(s.arrival_s for s in specs)
    assert specs == scaled_workload(cfg, 2.0, tiers, seed=3)  # seeded
    assert {s.tier for s in specs} == set(tiers)


def test_knee_brackets_and_interpolates() -> None:
    calls: list[float] = []

    async def evaluate(rate: float) -> float:
        calls.append(rate)
        return rate

    knee = asyncio.run(bisect_knee(evaluate, lambda r: r - 3.0, start=1.0, rel_tol=0.01,
                             max_trials=30))
    assert knee == pytest.approx(3.0, rel=0.01)
    never = asyncio.run(bisect_knee(evaluate, lambda r: 1.0, start=1.0, rel_tol=0.1, max_trials=5))
    assert never == 0.0


def test_scheduler_names_are_checked() -> None:
    assert parse_schedulers("slidingserve, vllm-default") == ["slidingserve", "vllm-default"]
    with pytest.raises(ValueError, match="unknown scheduler 'fifo'"):
        parse_schedulers("slidingserve,fifo")
    with pytest.raises(ValueError, match="named twice"):
        parse_schedulers("qoserve,qoserve")


def test_serving_scale_is_the_median_correction_of_every_adapter_run(tmp_path: Path) -> None:
    import numpy as np

    from predictor.steptrace import Provenance, StepTrace, write_steptrace
    from slidingserve.engine.predict import serving_scale
    from slidingserve.latency.features import F_DECODE_REQS, F_TOTAL_TOKENS, N_FEATURES

    assert serving_scale(tmp_path) == 1.0  # no adapter run (e.g. only vLLM's own scheduler)
    X = np.zeros((3, N_FEATURES))
    X[:, F_DECODE_REQS] = X[:, F_TOTAL_TOKENS] = 1
    prov = Provenance(engine="vllm-cpu", model="tiny", hardware="test", version="0")
    for name, scales in (("a", [1.0, 1.2, 1.4]), ("b", [1.3, 1.3, 5.0])):
        trace = StepTrace.from_arrays(X, [0.01] * 3, prov, {"latency_scale": np.array(scales)})
        write_steptrace(trace, tmp_path / name / "steps.csv")
    assert serving_scale(tmp_path) == pytest.approx(1.3)


def test_simulated_trial_slows_down_with_the_serving_correction() -> None:
    from slidingserve.engine.bench_config import DEFAULT_LATENCY_MODEL
    from slidingserve.engine.predict import simulate_trial

    if not DEFAULT_LATENCY_MODEL.is_dir():
        pytest.skip("no trained CPU predictor in the repo")
    cfg = BenchConfig(duration_s=20, drain_s=20)
    tiers = Calibration(ttft_s=0.04, decode_step_s=0.008, prompt_len=250).tiers(cfg.scales)
    fast = simulate_trial(cfg, "slidingserve", 6.0, tiers, 1.0)
    slow = simulate_trial(cfg, "slidingserve", 6.0, tiers, 3.0)
    assert slow["latency_scale"] == 3.0
    assert slow["slo_attainment"] < fast["slo_attainment"]


def test_trial_seeds_pool_one_workload_per_seed() -> None:
    from slidingserve.engine.bench_config import DEFAULT_LATENCY_MODEL
    from slidingserve.engine.cli import parse_seeds
    from slidingserve.engine.predict import simulate_trial

    assert BenchConfig(seed=4).trial_seeds() == (4,)
    assert BenchConfig(seed=4, workload_seeds=(0, 1)).trial_seeds() == (0, 1)
    assert parse_seeds("0, 2,5") == (0, 2, 5)
    for bad in ("0,x", "1,1", "-1", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    if not DEFAULT_LATENCY_MODEL.is_dir():
        pytest.skip("no trained CPU predictor in the repo")
    tiers = Calibration(ttft_s=0.04, decode_step_s=0.008, prompt_len=250).tiers(
        BenchConfig().scales)
    one = [BenchConfig(duration_s=10, drain_s=10, workload_seeds=(s,)) for s in (0, 1)]
    both = BenchConfig(duration_s=10, drain_s=10, workload_seeds=(0, 1))
    assert scaled_workload(one[0], 4.0, tiers, 0) != scaled_workload(one[1], 4.0, tiers, 1)
    att = [simulate_trial(c, "slidingserve", 4.0, tiers)["slo_attainment"] for c in one]
    pooled = simulate_trial(both, "slidingserve", 4.0, tiers)["slo_attainment"]
    assert pooled == pytest.approx(sum(att) / 2)  # 40 requests per seed: the mean


def test_sweep_knee_interpolates_at_the_first_failure() -> None:
    assert sweep_knee([(2.0, -0.1), (4.0, -0.05), (6.0, 0.15)]) == pytest.approx(4.5)
    # a pass after the first failure is noise: the knee stays at the first failure
    assert sweep_knee([(2.0, -0.1), (4.0, 0.1), (6.0, -0.1)]) == pytest.approx(3.0)
    assert sweep_knee([(2.0, 0.1), (4.0, 0.2)]) == 0.0
    assert sweep_knee([(4.0, -0.1), (2.0, -0.2)]) == 4.0  # none fails: a lower bound


def test_sweep_stops_after_two_rates_fail_both_criteria() -> None:
    seen: list[float] = []

    async def evaluate(rate: float) -> dict:
        seen.append(rate)
        att = 1.0 if rate <= 3 else 0.5
        return {"worst_tier_violation_rate": 0.0 if rate <= 3 else 0.5,
                "overall": {"slo_attainment": att}}

    result = asyncio.run(sweep_capacities(evaluate, [5.0, 1.0, 3.0, 4.0, 6.0, 7.0]))
    assert seen == [1.0, 3.0, 4.0, 5.0]
    assert 3.0 <= result["capacity_rps"] <= 4.0 and 3.0 <= result["capacity_rps_90"] <= 4.0


def test_rates_option_is_validated() -> None:
    from slidingserve.engine.cli import parse_rates

    assert parse_rates("4, 2,4") == [2.0, 4.0]
    with pytest.raises(ValueError, match="--rates"):
        parse_rates("2,x")
    with pytest.raises(ValueError, match="--rates"):
        parse_rates("0,1")


def test_variants_name_a_policy_with_overrides() -> None:
    from slidingserve.engine.bench import engine_kwargs
    from slidingserve.engine.cli import parse_variant

    label, spec = parse_variant('floor=slidingserve:{"chunker": {"min_chunk": 128}}')
    assert (label, spec) == ("floor", ("slidingserve", {"chunker": {"min_chunk": 128}}))
    assert parse_schedulers("floor,qoserve", [label]) == ["floor", "qoserve"]
    with pytest.raises(ValueError, match="unknown scheduler"):
        parse_schedulers("floor")  # not declared
    for bad, why in (("x=nosuch", "unknown policy"), ("x=slidingserve:[1]", "JSON object"),
                     ("x=slidingserve:{", "not JSON"), ("=slidingserve", "LABEL=POLICY")):
        with pytest.raises(ValueError, match=why):
            parse_variant(bad)
    cfg = BenchConfig(variants={label: spec})
    kw = engine_kwargs(cfg, "floor", Path("/m"), None, Path("/s.csv"))
    from slidingserve.engine.config import config_from_additional

    ss = config_from_additional(kw["additional_config"])
    assert ss.policy == "slidingserve"
    assert ss.policy_config == {"chunker": {"min_chunk": 128}}


def test_interleaved_sweeps_take_turns_one_trial_at_a_time() -> None:
    from slidingserve.engine.bench import interleaved_sweeps

    order: list[tuple[str, float]] = []
    running = 0

    def trial_fn(name: str, fails_from: float) -> Any:
        async def trial(rate: float) -> dict[str, Any]:
            nonlocal running
            running += 1
            assert running == 1  # never two trials at once
            order.append((name, rate))
            await asyncio.sleep(0.001 if name == "a" else 0.003)
            running -= 1
            bad = rate >= fails_from
            return {"worst_tier_violation_rate": 0.5 if bad else 0.0,
                    "overall": {"slo_attainment": 0.5 if bad else 1.0}}
        return trial

    found = asyncio.run(interleaved_sweeps([trial_fn("a", 99), trial_fn("b", 2)], [1, 2, 3, 4]))
    # b fails at 2 and 3 (two in a row) and stops; a goes on alone
    assert order == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3), ("a", 4)]
    assert found[0]["capacity_rps"] == 4 and 1 <= found[1]["capacity_rps"] < 2


def test_sweeps_given_a_turn_interleave_workloads_not_whole_trials() -> None:
    """With the lock passed down, each trial takes it per workload: the schedulers' workloads
    alternate (a slow spell of the machine falls on all of them alike)."""
    from slidingserve.engine.bench import interleaved_sweeps

    order: list[tuple[str, float, int]] = []
    turn = asyncio.Lock()

    def trial_fn(name: str) -> Any:
        async def trial(rate: float) -> dict[str, Any]:
            for seed in (0, 1, 2):
                async with turn:
                    order.append((name, rate, seed))
                    await asyncio.sleep(0.001 if name == "a" else 0.002)
            return {"worst_tier_violation_rate": 0.0, "overall": {"slo_attainment": 1.0}}
        return trial

    asyncio.run(interleaved_sweeps([trial_fn("a"), trial_fn("b")], [1, 2], None, turn))
    assert order == [(n, r, s) for r in (1, 2) for s in (0, 1, 2) for n in ("a", "b")]


def test_tier_priorities_survive_a_config_stored_with_sorted_keys() -> None:
    """A run's config is stored as JSON with sorted keys (batch, interactive, standard): read
    back, it must give the same priorities and the same workload as the run had."""
    import json

    cfg = BenchConfig()
    stored = BenchConfig(**json.loads(json.dumps(json.loads(cfg.model_dump_json()),
                                                 sort_keys=True)))
    assert list(stored.scales) == ["batch", "interactive", "standard"]
    calib = Calibration(ttft_s=0.04, decode_step_s=0.008, prompt_len=250)
    tiers, again = calib.tiers(cfg.scales), calib.tiers(stored.scales)
    assert {n: t.priority for n, t in again.items()} == {"interactive": 0, "standard": 1,
                                                         "batch": 2}
    assert again.to_dict() == tiers.to_dict()
    assert scaled_workload(stored, 4.0, again, 0) == scaled_workload(cfg, 4.0, tiers, 0)
    # scales without priorities of tiers not named like the defaults keep the mapping's order
    own = {"gold": TierScale(ttft_x=5, tpot_x=3), "bronze": TierScale(ttft_x=50, tpot_x=9)}
    assert [t.priority for t in calib.tiers(own).values()] == [0, 1]
    assert list(calib.tiers(own)) == ["gold", "bronze"]
