"""The violation monitor stops hopeless runs early and settled runs as soon as they settle."""

from __future__ import annotations

from sim_factories import specs_of, tiers

from slidingserve.sim import SimConfig, ViolationMonitor, simulate


def test_overloaded_run_stops_once_violations_are_certain():
    # 60 interactive requests at once on an engine that runs one sequence at a time:
    # most cannot get a first token within 6 s.
    specs = specs_of([(0.01 * i, 3000, 400, "interactive") for i in range(60)])
    monitor = ViolationMonitor(range(60), tiers(), max_violations=10)
    result = simulate(
        specs,
        tiers(),
        "vllm-fcfs",
        SimConfig(max_num_seqs=1),
        monitor=monitor,
        monitor_every_s=1.0,
    )
    assert monitor.aborted and result.stats["stopped_early"]
    assert monitor.violations > 10
    assert sum(r.finished for r in result.records) < 60


def test_light_run_stops_when_the_measured_window_is_settled():
    specs = specs_of([(1.0 * i, 200, 20, "standard") for i in range(100)])
    monitor = ViolationMonitor(range(10), tiers(), max_violations=5)
    result = simulate(specs, tiers(), "vllm-fcfs", monitor=monitor, monitor_every_s=1.0)
    assert not monitor.aborted and monitor.violations == 0
    assert all(r.finished for r in result.records[:10])
    assert not all(r.finished for r in result.records)  # stopped long before the last arrival


def test_horizon_counts_unstarted_requests_but_follows_decoding_ones():
    # Request 0 decodes 3000 tokens (far past the horizon); requests 1-3 queue behind a
    # one-sequence engine and have no first token at the horizon.
    specs = specs_of([(0.0, 100, 3000, "batch")] + [(0.1, 100, 10, "batch")] * 3)
    monitor = ViolationMonitor(range(4), tiers(), max_violations=10, horizon_s=5.0)
    result = simulate(
        specs,
        tiers(),
        "vllm-fcfs",
        SimConfig(max_num_seqs=1),
        monitor=monitor,
        monitor_every_s=1.0,
    )
    assert not monitor.aborted
    assert monitor.violations == 3
    assert result.records[0].finished and result.records[0].n_out == 3000
    assert monitor.cut_at_horizon == {1, 2, 3}
