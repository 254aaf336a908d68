"""``SimProgress``: a line on how far a long simulation is, without changing its results."""

from __future__ import annotations

import itertools

import pytest
from sim_factories import specs_of, tiers

from slidingserve.sim import SimConfig, simulate
from slidingserve.sim.progress import SimProgress


def test_progress_lines_report_the_run_and_leave_its_records_unchanged():
    # a queue builds on a one-sequence engine: the lines must show it
    specs = specs_of([(0.5 * i, 3000, 400, "standard") for i in range(80)])
    lines: list[str] = []
    ticks = itertools.count(step=10.0)  # every question comes 10 s of wall time later
    progress = SimProgress(lines.append, every_s=10.0, clock=lambda: next(ticks))
    config = SimConfig(max_num_seqs=1)
    watched = simulate(specs, tiers(), "vllm-fcfs", config, monitor=progress,
                       monitor_every_s=5.0)
    plain = simulate(specs, tiers(), "vllm-fcfs", config)
    assert watched.records == plain.records
    assert len(lines) >= 5
    assert lines[0].startswith("simulated 5 s of 40 s of arrivals: 11 of 80 requests arrived")
    queues = [int(line.split(" finished, ")[1].split(" waiting")[0]) for line in lines]
    assert max(queues) > 1  # requests waited for their first token at some point
    assert lines[-1].endswith("wall")


def test_progress_waits_for_its_interval():
    lines: list[str] = []
    clock = iter([0.0, 1.0, 2.0, 61.0, 62.0])
    progress = SimProgress(lines.append, every_s=60.0, clock=lambda: next(clock))
    progress.bind(())
    assert not any(progress.should_stop(t) for t in (1.0, 2.0, 3.0, 4.0))
    assert lines == ["simulated 3 s of 0 s of arrivals: 0 of 0 requests arrived, 0 finished, "
                     "0 waiting for a first token; 1:01 wall"]


def test_a_non_positive_interval_is_refused():
    with pytest.raises(ValueError, match="progress interval"):
        SimProgress(print, every_s=0)
