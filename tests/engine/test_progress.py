"""Progress lines of ``bench engine`` runs: counts, elapsed time, ETA (a stepped clock)."""

from __future__ import annotations

import pytest

from slidingserve.engine.bench import trials_planned
from slidingserve.engine.bench_config import BenchConfig
from slidingserve.engine.progress import TrialProgress, format_duration


class SteppedClock:
    """Monotonic seconds that the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3600, 7325, -3)] == \
        ["0:00", "0:59", "1:01", "59:59", "1:00:00", "2:02:05", "0:00"]


def test_lines_name_the_trial_and_estimate_from_finished_trials() -> None:
    clock, lines = SteppedClock(), []
    progress = TrialProgress(4, lines.append, clock=clock)
    progress.started("slidingserve", 4.0, 0)
    assert lines[-1] == ("trial 1/4: slidingserve rate 4 rps seed 0 started "
                         "(elapsed 0:00, ETA unknown)")
    clock.now += 90
    progress.finished("slidingserve", 4.0, 0, 0.9312)
    assert lines[-1] == ("trial 1/4: slidingserve rate 4 rps seed 0 done in 1:30, "
                         "SLO attainment 0.931 (elapsed 1:30, ETA 4:30)")
    clock.now += 30  # between trials (an engine starting): counts as elapsed, not trial time
    progress.started("vllm-default", 4.5, 1)
    assert lines[-1].startswith("trial 2/4: vllm-default rate 4.5 rps seed 1 started")
    assert lines[-1].endswith("(elapsed 2:00, ETA 4:30)")
    clock.now += 150
    progress.finished("vllm-default", 4.5, 1, 0.5)
    assert progress.done == 2 and progress.eta_s() == pytest.approx(2 * 120)
    assert lines[-1].endswith("done in 2:30, SLO attainment 0.500 (elapsed 4:30, ETA 4:00)")


def test_an_upper_bound_says_so_and_drop_tightens_it() -> None:
    clock, lines = SteppedClock(), []
    progress = TrialProgress(14, lines.append, upper_bound=True, clock=clock)
    progress.started("slidingserve", 1.0, 0)
    clock.now += 60
    progress.finished("slidingserve", 1.0, 0, 1.0)
    assert lines[-1].startswith("trial 1/<=14: ") and lines[-1].endswith("ETA <= 13:00)")
    progress.drop(10)  # the search ended after 4 of its 14 possible trials
    assert progress.total == 4 and progress.eta_s() == pytest.approx(3 * 60)
    progress.drop(100)
    assert progress.total == 1 and progress.eta_s() == 0.0  # never below the trials done
    with pytest.raises(ValueError, match="negative"):
        progress.drop(-1)
    with pytest.raises(ValueError, match="total"):
        TrialProgress(0, lines.append)


def test_trials_planned_counts_schedulers_rates_and_seeds() -> None:
    three_seeds = BenchConfig(workload_seeds=(0, 1, 2))
    assert trials_planned(BenchConfig(), 4, search=False) == (4, False)
    assert trials_planned(three_seeds, 2, search=False) == (6, False)
    assert trials_planned(three_seeds, 2, search=True, rates=[6, 9, 12]) == (18, True)
    assert trials_planned(three_seeds, 2, search=True, rates=[6, 9]) == (12, False)
    # bisection: at most max_trials rates for each of the two capacity definitions
    assert trials_planned(BenchConfig(), 3, search=True, max_trials=7) == (42, True)
