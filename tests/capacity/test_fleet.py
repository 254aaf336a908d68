"""Fleet mode of the capacity search: one policy, several routers and replica counts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slidingserve.capacity.config import CapacityConfig, Contender
from slidingserve.capacity.fleet import run_fleet_capacity
from slidingserve.sim import SimConfig
from slidingserve.sim.fleet import fleet_speed


def _tiny(**kw) -> CapacityConfig:
    base = dict(
        contenders=[Contender(label="fcfs", policy="vllm-fcfs")],
        seeds=1,
        trial_seconds=3.0,
        warmup_seconds=1.0,
        horizon_seconds=6.0,
        min_requests=20,
        rel_tol=0.2,
        curve_points=[],
        workers=1,
        sim=SimConfig(max_num_seqs=4, replicas=2, fleet="heterogeneous"),
        start_rate=2.0,
        routers=["round-robin", "slack"],
        fleet_replicas=[1, 2],
    )
    base.update(kw)
    return CapacityConfig(**base)


def test_fleet_speed_counts_slow_replicas_as_fractions():
    sim = SimConfig(replicas=4, fleet="heterogeneous", slow_factor=2.0)
    assert fleet_speed(sim) == pytest.approx(3.0)
    assert fleet_speed(sim, 1) == 1.0
    assert fleet_speed(SimConfig(replicas=4)) == 4.0


def test_fleet_capacity_reports_every_router_and_scaling():
    result = run_fleet_capacity(_tiny())
    assert set(result["routers"]) == {"round-robin", "slack"}
    cap1 = result["single_replica"]["capacity_rps"]
    assert cap1 > 0
    for r in result["routers"].values():
        assert r["replicas"] == 2 and set(r["by_replicas"]) == {"1", "2"}
        assert r["by_replicas"]["1"]["capacity_rps"] == cap1  # searched once, shared
        two = r["by_replicas"]["2"]
        assert r["capacity_rps"] == two["capacity_rps"] > 0
        assert two["capacity_per_replica"] == pytest.approx(two["capacity_rps"] / 2)
        assert two["scaling_efficiency"] == pytest.approx(two["capacity_rps"] / (2 * cap1))
        assert r["capacity_rps_90"] >= 0


def test_config_rejects_unknown_routers():
    with pytest.raises(ValueError, match="unknown router 'nearest'"):
        _tiny(routers=["nearest"])


def test_cli_routers_writes_the_routers_key(tmp_path):
    from slidingserve.cli import app

    out = tmp_path / "fleet"
    args = [
        "capacity", "--out", str(out), "--policies", "vllm-fcfs", "--replicas", "2",
        "--routers", "pow2,least-work", "--fleet", "heterogeneous", "--arrival", "gamma",
        "--cv", "2", "--seeds", "1", "--trial-seconds", "3", "--warmup-seconds", "1",
        "--horizon-seconds", "6", "--min-requests", "20", "--rel-tol", "0.25",
        "--start-rate", "2", "--workers", "1", "--kv-blocks", "64",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "capacity.json").read_text())
    assert set(data["routers"]) == {"pow2", "least-work"}
    for r in data["routers"].values():
        assert {"capacity_rps", "capacity_rps_90"} <= set(r)
    assert data["arrival"] == {"kind": "gamma", "cv": 2.0}
    assert (out / "routers.png").is_file()
