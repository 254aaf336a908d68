"""The engine benchmark's pure parts: workload scaling, calibrated tiers, knee search, CLI input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from slidingserve.engine.bench import BenchConfig, Calibration, _knee, scaled_workload
from slidingserve.engine.cli import parse_schedulers

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

    knee = asyncio.run(_knee(evaluate, lambda r: r - 3.0, start=1.0, rel_tol=0.01,
                             max_trials=30))
    assert knee == pytest.approx(3.0, rel=0.01)
    never = asyncio.run(_knee(evaluate, lambda r: 1.0, start=1.0, rel_tol=0.1, max_trials=5))
    assert never == 0.0


def test_scheduler_names_are_checked() -> None:
    assert parse_schedulers("slidingserve, vllm-default") == ["slidingserve", "vllm-default"]
    with pytest.raises(ValueError, match="unknown scheduler 'fifo'"):
        parse_schedulers("slidingserve,fifo")
    with pytest.raises(ValueError, match="named twice"):
        parse_schedulers("qoserve,qoserve")
