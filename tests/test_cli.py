"""CLI smoke tests through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slidingserve.cli import app

runner = CliRunner()


def test_sim_writes_summary_and_resolved_config(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "sim",
            "--policy",
            "vllm-fcfs",
            "--rate",
            "5",
            "--num-requests",
            "40",
            "--out",
            str(out),
            "--seed",
            "3",
            "--budget",
            "1024",
            "--replicas",
            "2",
            "--router",
            "least-loaded",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["format"] == "slidingserve.summary/v1"
    assert summary["overall"]["requests"] == 40
    assert set(summary["tiers"]) == {"interactive", "standard", "batch"}
    assert config["policy_config"] == {"budget": 1024}
    assert config["sim"]["replicas"] == 2 and config["workload"]["seed"] == 3


def test_sim_replays_a_trace(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,5\n0.5,200,6\n1.0,50,7\n")
    res = runner.invoke(
        app, ["sim", "--trace", str(trace), "--policy", "sarathi", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["overall"]["finished"] == 3
    assert "windows" not in summary


def test_sim_summarises_arrival_windows(tmp_path):
    out = tmp_path / "w"
    args = ["sim", "--policy", "sarathi", "--rate", "4", "--num-requests", "60", "--seed", "1"]
    res = runner.invoke(app, [*args, "--out", str(out), "--window-seconds", "5"])
    assert res.exit_code == 0, res.output
    assert "by arrival window" in res.output
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["windows"]
    assert sum(w["requests"] for w in rows) == 60
    assert [w["start_s"] for w in rows] == [5.0 * i for i in range(len(rows))]
    assert all(set(w["slo_attainment"]) == {"overall", *summary["tiers"]} for w in rows)
    bad = runner.invoke(app, [*args, "--out", str(out), "--window-seconds", "0"])
    assert bad.exit_code != 0 and "window-seconds" in bad.output
    fine = runner.invoke(app, [*args, "--out", str(out), "--window-seconds", "0.001"])
    assert fine.exit_code != 0 and "windows (at most" in fine.output


def test_sim_with_slow_spells_and_a_correcting_planner(tmp_path):
    args = ["sim", "--policy", "slidingserve", "--rate", "4", "--num-requests", "40",
            "--timing", "noise", "--spells", "0.5,0.4,3", "--planner-correction", "0.95"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert "spells(0.5/s of 0.4s x3) planner-corrected(0.95)" in summary["timing"]["label"]
    assert summary["timing"]["spell_rate_hz"] == 0.5


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sim", "--policy", "fifo", "--rate", "1"], "fifo"),
        (["sim", "--rate", "1", "--trace", "/nonexistent/trace.csv"], "/nonexistent/trace.csv"),
        (["sim", "--rate", "1", "--tier-mix", "gold=1"], "gold"),
        (["sim", "--rate", "-2"], "-2"),
        (["sim", "--rate", "1", "--router", "nearest"], "nearest"),
        (["sim"], "--rate"),
        (["capacity", "--policies", "slidingserve,fifo"], "fifo"),
        (["capacity", "--budgets", "256,lots"], "lots"),
        (["capacity", "--curve", "1,x"], "1,x"),
        (["capacity", "--protocol", "qos"], "qos"),
        (["capacity", "--latency-model", "a100"], "a100"),
        (["sim", "--rate", "1", "--latency-model", "a100"], "a100"),
        (["sim", "--rate", "1", "--progress-every", "-5"], "-5"),
        (["sim", "--rate", "1", "--spells", "0.1,half"], "0.1,half"),
        (["sim", "--rate", "1", "--spells", "0.1,0.5,0.5"], "spell_x"),
        (["sim", "--rate", "1", "--planner-correction", "1.5"], "planner_correction"),
    ],
)
def test_bad_values_are_named_and_exit_non_zero(tmp_path, args, needle):
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "x")])
    assert res.exit_code != 0
    assert needle in res.output


def test_bad_tier_file_is_named(tmp_path):
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers:\n  - {name: a, ttft_s: -1, tpot_s: 0.1}\n")
    res = runner.invoke(app, ["sim", "--rate", "1", "--tiers", str(bad), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert str(bad) in res.output and "ttft_s" in res.output


def test_capacity_writes_json_and_plot(tmp_path):
    out = tmp_path / "cap"
    res = runner.invoke(
        app,
        [
            "capacity",
            "--no-physical-limit",  # measured in tests/capacity/test_protocol.py
            "--policies",
            "vllm-fcfs,sarathi",
            "--out",
            str(out),
            "--seeds",
            "1",
            "--budgets",
            "1024",
            "--trial-seconds",
            "3",
            "--warmup-seconds",
            "1",
            "--horizon-seconds",
            "6",
            "--min-requests",
            "20",
            "--rel-tol",
            "0.25",
            "--curve",
            "1.0,1.3",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "capacity.json").read_text())
    for name in ("vllm-fcfs", "sarathi"):
        entry = data["policies"][name]
        assert entry["capacity_rps"] > 0 and entry["budget"] == 1024
        assert "capacity_rps_90" in entry and "spread" in entry
    assert (out / "attainment.png").stat().st_size > 1000
    assert "capacity (1%)" in res.output
