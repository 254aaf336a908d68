"""The soak's judgement, without a cluster: windows scaled to the run, each target able to
fail, and the plot drawn from the report alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidingserve.faults.soak import Leaver, Sent, SoakConfig
from slidingserve.faults.soak_report import judge, p99_change_interval, plot_soak, rss_growth
from slidingserve.faults.soak_watch import AppWatch
from slidingserve.slo.tiers import load_tiers

TIERS = load_tiers("qoserve")
CFG = SoakConfig(minutes=3.0, rate_rps=1.0, curve_windows=6)  # thirds of 60 s


def sample(t: float, engine_mib: float, replicas: tuple[str, ...] = ("Engine#a", "Ingress#b"),
           kv: int = 0) -> dict:
    return {"t_s": t, "rss_mib": {"Engine#a": engine_mib, "ProxyActor": 100.0},
            "replicas": list(replicas), "kv_blocks_used": {"Engine#a": kv},
            "kv_blocks_total": {"Engine#a": 100}, "engine_queue": {"Engine#a": 3},
            "engine_running": {"Engine#a": 2}, "engine_waiting": {"Engine#a": 1}}


def traffic(ttft_late: float = 0.5, lost: int = 0) -> list[Sent]:
    """One request per tier a second; a schedule of 60 slots played three times."""
    out = []
    for i in range(180):
        t = float(i)
        for tier in TIERS:
            ttft = ttft_late if t >= 120 else 0.5
            out.append(Sent(t, tier, True, "served", 200, ttft, 1.0, slot=i % 60, play=i // 60))
    out += [Sent(5.0, "batch", False, "lost", None, None, 240.0, "hung")] * lost
    return out


def run_judge(samples: list[dict], sent: list[Sent], final: dict | None = None) -> dict:
    watch = AppWatch(t0=0.0, period_s=2.0, samples=samples)
    for s in samples:
        for label in s["replicas"]:
            watch.replicas_seen.setdefault(label, s["t_s"])
    probe = {"engines_not_reached": []}
    return judge(CFG, TIERS, sent, [Leaver(3.0, "batch", 2, True, 200)], watch,
                 final or samples[-1], probe, 1.0, None, {})


def flat() -> list[dict]:
    return [sample(float(t), 500.0) for t in range(0, 181, 2)]


def test_a_clean_soak_meets_every_target():
    r = run_judge(flat(), traffic())
    assert r["all_targets_met"], r["targets"]
    assert r["targets"]["rss_flat"]["window_s"] == [60.0, 180.0]
    assert r["targets"]["ttft_p99_stable"]["last_window_s"] == [120.0, 180.0]
    assert len(r["ttft"]["windows"]) == 6


def test_each_target_can_fail():
    growing = [sample(float(t), 500.0 + (t if t >= 60 else 0)) for t in range(0, 181, 2)]
    assert not run_judge(growing, traffic())["targets"]["rss_flat"]["ok"]
    r = run_judge(flat(), traffic(ttft_late=0.6))
    assert not r["targets"]["ttft_p99_stable"]["ok"]
    assert all(c == pytest.approx(0.2) for c in r["ttft"]["change"].values())
    assert not run_judge(flat(), traffic(lost=1))["targets"]["nothing_lost"]["ok"]
    leaked = run_judge(flat(), traffic(), final=sample(181.0, 500.0, kv=3))
    assert not leaked["targets"]["kv_blocks_freed"]["ok"]
    restarted = [*flat()[:-1], sample(180.0, 500.0, ("Engine#z", "Ingress#b"))]
    r = run_judge(restarted, traffic())
    assert r["targets"]["no_replica_restart"] == {"ok": False, "new": ["Engine#z"],
                                                   "gone": ["Engine#a"], "count": 1}


def test_rss_growth_compares_the_first_and_last_tenth_of_the_window():
    rows = [{"t_s": float(t), "rss_mib": {"p": 100.0 if t < 50 else 110.0}} for t in range(100)]
    assert rss_growth(rows, 0.0, 99.0) == {"p": 0.1}
    assert rss_growth(rows, 50.0, 99.0) == {"p": 0.0}


def test_the_report_follows_each_engines_load():
    r = run_judge(flat(), traffic())
    assert r["engines"]["held"][0] == {"t_s": 0.0, "Engine#a": 3}
    assert r["engines"]["running"][-1] == {"t_s": 180.0, "Engine#a": 2}
    assert len(r["engines"]["waiting"]) == len(flat())


def test_the_plot_needs_only_the_report(tmp_path: Path):
    plot_soak(run_judge(flat(), traffic()), tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000


def test_the_cli_writes_the_report_the_plot_and_a_table(tmp_path: Path, capsys):
    import json

    from slidingserve.faults.cli import write_soak

    write_soak(run_judge(flat(), traffic(lost=1)), tmp_path)
    assert json.loads((tmp_path / "soak.json").read_text())["requests"]["lost"] == 1
    assert (tmp_path / "soak.png").exists()
    out = capsys.readouterr().out
    assert "nothing lost" in out and "NO" in out


def test_whole_answers_count_with_the_ingress_measured_ttft():
    sent = traffic()
    # the one slow answer, and a refusal (no TTFT: left out)
    sent += [Sent(150.0, "interactive", False, "served", 200, 9.0, 9.5, slot=60, play=2)]
    sent += [Sent(150.0, "interactive", False, "rejected", 429, None, 0.01, slot=61, play=2)]
    r = run_judge(flat(), sent)
    last = r["ttft"]["last"]["interactive"]
    assert last["n"] == 61 and last["p99_s"] > 0.5
    assert r["ttft"]["change"]["interactive"] > 0.1


def test_the_interval_shows_what_chance_alone_moves_a_p99():
    rng = np.random.default_rng(1)
    same = [list(rng.exponential(0.5, 400)) for _ in range(2)]
    lo, hi = p99_change_interval(*same)
    assert lo < 0.0 < hi and hi - lo > 0.2  # ~4 requests above the p99: wide by chance alone
    lo, hi = p99_change_interval(same[0], [2.0 * x for x in same[1]])
    assert lo > 0.3  # twice as slow: the whole interval is above the 10% limit
    assert p99_change_interval([], same[1]) is None


def test_the_report_carries_an_interval_per_tier():
    r = run_judge(flat(), traffic(ttft_late=0.6))
    ci = r["targets"]["ttft_p99_stable"]["change_interval_90"]
    assert set(ci) == set(TIERS)
    assert all(lo == pytest.approx(0.2) and hi == pytest.approx(0.2) for lo, hi in ci.values())


def test_the_schedule_is_played_three_times_unless_told_otherwise():
    from slidingserve.faults.soak import schedule

    cfg = SoakConfig(minutes=3.0, rate_rps=2.0, seed=3)
    played = schedule("http://localhost:8000", TIERS, cfg, 2.0)
    plays = [[p for p in played if p.play == k] for k in range(3)]
    assert len(plays[0]) == len(plays[1]) == len(plays[2]) > 100  # ~2 req/s for 60 s each
    for k in (1, 2):
        for a, b in zip(plays[0], plays[k], strict=True):
            assert (a.slot, a.stream, a.spec.tier, a.spec.prompt_len, a.spec.output_len) == \
                   (b.slot, b.stream, b.spec.tier, b.spec.prompt_len, b.spec.output_len)
            assert a.seed != b.seed  # new prompt tokens: no prefix-cache hit on a replay
            assert b.spec.arrival_s == pytest.approx(a.spec.arrival_s + 60.0 * k)
    assert max(p.spec.arrival_s for p in plays[0]) <= 60.0
    fresh = schedule("http://localhost:8000", TIERS, SoakConfig(minutes=3.0, rate_rps=2.0,
                                                                 seed=3, repeat=False), 2.0)
    assert {p.play for p in fresh} == {0} and max(p.spec.arrival_s for p in fresh) > 170.0


def test_the_paired_interval_sees_through_the_draw_to_the_system():
    from slidingserve.faults.soak_report import p99_change_interval_paired

    rng = np.random.default_rng(2)
    draw = rng.exponential(0.5, 400)  # the schedule's TTFTs: a heavy tail set by its bursts
    jitter = [1 + rng.normal(0, 0.02, 400) for _ in range(2)]  # the system's own noise
    first = dict(enumerate(draw * jitter[0]))
    lo, hi = p99_change_interval_paired(first, dict(enumerate(draw * jitter[1])))
    assert -0.1 < lo <= hi < 0.1  # same requests, same system: within the limit
    lo, hi = p99_change_interval_paired(first, dict(enumerate(1.3 * draw * jitter[1])))
    assert lo > 0.1  # 30% slower on the same requests: the whole interval past the limit
    slow_unpaired = p99_change_interval(list(draw), list(rng.exponential(0.5, 400)))
    assert slow_unpaired[1] - slow_unpaired[0] > 2 * (hi - lo)  # fresh draws: far wider
    assert p99_change_interval_paired({}, first) is None


def test_a_fresh_draw_soak_compares_the_thirds_by_arrival_time():
    from dataclasses import replace

    sent = [replace(s, slot=None, play=0) for s in traffic(ttft_late=0.6)]
    watch = AppWatch(t0=0.0, period_s=2.0, samples=flat())
    r = judge(replace(CFG, repeat=False), TIERS, sent, [], watch, flat()[-1],
              {"engines_not_reached": []}, 1.0, None, {})
    assert not r["targets"]["ttft_p99_stable"]["paired"]
    assert all(c == pytest.approx(0.2) for c in r["ttft"]["change"].values())
    assert r["ttft"]["first"]["batch"]["n"] == 60


def test_the_paired_interval_keeps_a_bursts_requests_together():
    from slidingserve.faults.soak_report import p99_change_interval_paired

    rng = np.random.default_rng(4)
    base = np.full(600, 0.2)
    for start in rng.choice(np.arange(0, 590, 10), 5, replace=False):
        base[start:start + 10] = 2.0  # five bursts of ten slow requests
    noise = [rng.normal(1.0, 0.25, 60).repeat(10) for _ in range(2)]  # per burst, not request
    first, last = (dict(enumerate(base * n)) for n in noise)
    lo1, hi1 = p99_change_interval_paired(first, last)
    lo10, hi10 = p99_change_interval_paired(first, last, block=10)
    assert hi10 - lo10 > hi1 - lo1  # whole bursts drawn: the wider, honest interval


def test_the_report_keeps_every_request():
    r = run_judge(flat(), traffic(lost=1))
    rows = r["requests"]["rows"]
    assert len(rows) == len(traffic(lost=1))
    row = dict(zip(r["requests"]["columns"], rows[0], strict=True))
    assert row["tier"] in TIERS and row["slot"] == 0 and row["play"] == 0


def test_the_report_sets_the_medians_and_the_hosts_speed_beside_the_p99(tmp_path: Path):
    """A slower host at the end shows in the probe's change; the medians' change is reported
    next to the p99's; neither decides the target."""
    samples = [{**sample(float(t), 500.0), "host_probe_ms": 2.0 if t < 120 else 3.0}
               for t in range(0, 181, 2)]
    r = run_judge(samples, traffic(ttft_late=0.8))
    stable = r["targets"]["ttft_p99_stable"]
    assert not stable["ok"]
    host = r["host"]
    assert (host["first_ms"], host["last_ms"], host["change"]) == (2.0, 3.0, 0.5)
    assert host["probe_ms"][0] == 2.0 and host["probe_ms"][-1] == 3.0
    assert len(host["t_s"]) == len(host["probe_ms"])
    plot_soak(r, tmp_path / "soak.png")  # the probe's series on the TTFT panel
    assert (tmp_path / "soak.png").stat().st_size > 0
    assert stable["host_probe_change"] == 0.5
    assert stable["median_change"] == {n: 0.6 for n in TIERS}
    r = run_judge(flat(), traffic())  # samples without the probe (older reports): no figure
    assert r["host"]["change"] is None and r["targets"]["ttft_p99_stable"]["ok"]


def test_the_host_probe_times_fixed_work():
    from slidingserve.faults.soak_watch import host_probe_ms

    small, large = host_probe_ms(runs=3, n=2_000), host_probe_ms(runs=3, n=200_000)
    assert 0.0 < small < large
