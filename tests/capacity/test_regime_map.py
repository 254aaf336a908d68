"""The regime map: its cells, axes parsing, the SLO scale and tier mix it varies, and one real
(tiny) map through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slidingserve.capacity.regime_map import (
    AXES,
    MapAxes,
    map_cells,
    parse_map_axes,
    ratios,
)
from slidingserve.cli import app
from slidingserve.slo import TierConfigError, load_tiers, scale_tiers
from slidingserve.workload import TierMixError, top_tier_mix

runner = CliRunner()


def test_star_grid_moves_one_axis_at_a_time_from_the_base():
    cells = map_cells(MapAxes())
    base = cells[0]
    assert (base.latency_model, base.timing, base.protocol) == (
        "roofline-h100", "oracle", "steady-state"
    )
    assert (base.slo_scale, base.arrival_cv, base.interactive_share) == (1.0, 1.0, 0.2)
    # 1 base + 2 latency models + 1 timing + 1 protocol + 3 SLO scales + 2 CVs + 2 shares
    assert len(cells) == 12
    for cell in cells[1:]:
        moved = [a for a in AXES if getattr(cell, a) != getattr(base, a)]
        if cell.protocol == "qoserve":  # the protocol brings its own step model
            assert set(moved) <= {"latency_model", "protocol", "interactive_share"}
            assert cell.interactive_share is None  # its tiers are drawn uniformly
            assert cell.latency_model == "qoserve-a100"
        else:
            assert len(moved) == 1, (cell, moved)
    assert len(set(cells)) == len(cells)


def test_full_grid_is_the_product_and_protocol_cells_collapse():
    axes = MapAxes(slo_scale=[1.0, 0.5], arrival_cv=[1.0, 2.0], timing=["oracle"],
                   latency_model=["roofline-h100"], interactive_share=[None],
                   protocol=["steady-state", "qoserve"])
    cells = map_cells(axes, "full")
    steady = [c for c in cells if c.protocol == "steady-state"]
    assert len(steady) == 4
    # Every qoserve-protocol combination is the same cell: the protocol fixes tiers and arrivals.
    assert len([c for c in cells if c.protocol == "qoserve"]) == 1


def test_map_axes_narrow_and_name_bad_input():
    axes = parse_map_axes(["slo_scale=0.5,1", "arrival-cv=4;interactive_share=default,0.8"],
                          MapAxes())
    assert axes.slo_scale == [0.5, 1.0]
    assert axes.arrival_cv == [4.0]
    assert axes.interactive_share == [None, 0.8]
    assert map_cells(axes)[0].slo_scale == 0.5  # the first value listed is the base
    with pytest.raises(ValueError, match="NAME one of"):
        parse_map_axes(["burst=2"], MapAxes())
    with pytest.raises(ValueError, match="'fast' is not a number"):
        parse_map_axes(["slo_scale=fast"], MapAxes())
    with pytest.raises(ValueError, match="slo_scale"):
        parse_map_axes(["slo_scale=-1"], MapAxes())
    with pytest.raises(ValueError, match="interactive_share"):
        parse_map_axes(["interactive_share=1.5"], MapAxes())
    with pytest.raises(ValueError, match="no trace file"):
        parse_map_axes(["trace=/nonexistent.csv"], MapAxes())


def test_scale_tiers_multiplies_every_latency_target():
    tiers = load_tiers()
    half = scale_tiers(tiers, 0.5)
    for name, t in tiers.items():
        h = half[name]
        assert h.ttft_s == pytest.approx(t.ttft_s / 2)
        assert h.tpot_s == pytest.approx(t.tpot_s / 2)
        assert h.e2e_s == (None if t.e2e_s is None else pytest.approx(t.e2e_s / 2))
        assert (h.weight, h.priority, h.share) == (t.weight, t.priority, t.share)
    assert scale_tiers(tiers, 1.0) is tiers
    with pytest.raises(TierConfigError, match="positive"):
        scale_tiers(tiers, 0.0)


def test_top_tier_mix_keeps_the_others_in_proportion():
    tiers = load_tiers()  # interactive 0.2, standard 0.5, batch 0.3
    mix = top_tier_mix(tiers, 0.8)
    assert mix["interactive"] == pytest.approx(0.8)
    assert mix["standard"] == pytest.approx(0.2 * 0.5 / 0.8)
    assert mix["batch"] == pytest.approx(0.2 * 0.3 / 0.8)
    with pytest.raises(TierMixError, match="top tier"):
        top_tier_mix(tiers, 1.2)


def test_ratios_compare_with_the_best_other_policy():
    row = {"policies": {
        "slidingserve": {"capacity_rps": 12.0, "capacity_rps_90": 20.0},
        "qoserve": {"capacity_rps": 10.0, "capacity_rps_90": 25.0},
        "sarathi": {"capacity_rps": 8.0, "capacity_rps_90": None},
    }}
    r1, r90 = ratios(row)
    assert r1 == pytest.approx(1.2)
    assert r90 == pytest.approx(0.8)


def test_map_cli_writes_cells_and_resumes(tmp_path):
    out = tmp_path / "map"
    args = [
        "capacity", "--map", "--out", str(out),
        "--map-axes", "slo_scale=1,2;latency_model=roofline-h100;timing=oracle;"
        "protocol=steady-state;arrival_cv=1;interactive_share=default",
        "--policies", "slidingserve,vllm-fcfs", "--budgets", "2048", "--seeds", "1",
        "--trial-seconds", "4", "--warmup-seconds", "2", "--horizon-seconds", "5",
        "--min-requests", "40", "--rel-tol", "0.3", "--sweep-rel-tol", "0.4", "--workers", "1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cells = json.loads((out / "map.json").read_text())
    assert [c["slo_scale"] for c in cells] == [1.0, 2.0]
    for c in cells:
        assert {"trace", "latency_model", "timing", "protocol", "slo_scale", "arrival_cv",
                "interactive_share", "policies"} <= set(c)
        assert set(c["policies"]) == {"slidingserve", "vllm-fcfs"}
        for v in c["policies"].values():
            assert v["capacity_rps"] > 0 and "capacity_rps_90" in v
    assert (out / "map.png").stat().st_size > 0
    # the step-rate bound (capacity.step_rate) rises as the TPOT targets loosen
    assert 0 < cells[0]["step_rate_bound_rps"] < cells[1]["step_rate_bound_rps"]
    # Relaxed SLOs cannot lower a capacity by much (same workload seed, coarse tolerance).
    assert cells[1]["policies"]["vllm-fcfs"]["capacity_rps"] >= (
        0.6 * cells[0]["policies"]["vllm-fcfs"]["capacity_rps"]
    )
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("already in") == 2
    assert json.loads((out / "map.json").read_text()) == cells


def test_map_cli_names_a_bad_axis(tmp_path):
    res = runner.invoke(app, ["capacity", "--map", "--out", str(tmp_path),
                              "--map-axes", "slo_scale=tight"])
    assert res.exit_code != 0
    assert "slo_scale" in res.output and "tight" in res.output


def test_the_qoserve_protocol_refuses_bursts_and_slo_scaling():
    from slidingserve.capacity.config import CapacityConfig, Contender

    with pytest.raises(ValueError, match="fixes Poisson arrivals"):
        CapacityConfig(contenders=[Contender(label="a", policy="slidingserve")],
                       protocol="qoserve", arrival="gamma", cv=2.0)


def test_map_cli_refuses_an_axis_given_as_a_plain_option(tmp_path):
    res = runner.invoke(app, ["capacity", "--map", "--out", str(tmp_path),
                              "--latency-model", "qoserve-a100"])
    assert res.exit_code != 0
    assert "--latency-model is an axis of the map" in res.output
