"""Progress of a ``bench engine`` run: one line as each trial starts and ends.

A trial here is one workload (one seed) at one rate on one scheduler's engine; ``run_trial``
runs one per workload seed. Lines name the scheduler, rate and seed, the run's elapsed time
and an ETA: the mean wall time of the trials finished so far times the trials left. Sweeps
that may stop early (a rate sweep stops after two failing rates, a bisection after its
tolerance) plan the most trials they could run, so their ETA is an upper bound (``<=``) until
``drop`` removes the trials a finished search did not need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour); negative durations clip to 0."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class TrialProgress:
    """Counts trials against ``total`` and writes a line per trial start and end."""

    total: int
    write: Callable[[str], None]
    upper_bound: bool = False  # total is the most trials the run may need
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    _started_s: float = field(init=False)
    _trial_s: float = field(init=False, default=0.0)  # wall time of the finished trials
    _current_s: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.total <= 0:
            raise ValueError(f"total must be > 0 trials (got {self.total})")
        self._started_s = self.clock()

    def eta_s(self) -> float | None:
        """Seconds left: mean trial time x trials left (None before a trial has finished)."""
        if self.done == 0:
            return None
        return self._trial_s / self.done * max(self.total - self.done, 0)

    def _status(self) -> str:
        eta = self.eta_s()
        shown = "unknown" if eta is None else \
            ("<= " if self.upper_bound else "") + format_duration(eta)
        return f"elapsed {format_duration(self.clock() - self._started_s)}, ETA {shown}"

    def _name(self, scheduler: str, rate: float, seed: int) -> str:
        return (f"trial {self.done + 1}/{'<=' if self.upper_bound else ''}{self.total}: "
                f"{scheduler} rate {rate:g} rps seed {seed}")

    def started(self, scheduler: str, rate: float, seed: int) -> None:
        self._current_s = self.clock()
        self.write(f"{self._name(scheduler, rate, seed)} started ({self._status()})")

    def finished(self, scheduler: str, rate: float, seed: int, attainment: float) -> None:
        now = self.clock()
        took = now - (self._current_s if self._current_s is not None else now)
        name = self._name(scheduler, rate, seed)
        self._trial_s += took
        self.done += 1
        self._current_s = None
        self.write(f"{name} done in {format_duration(took)}, SLO attainment "
                   f"{attainment:.3f} ({self._status()})")

    def drop(self, trials: int) -> None:
        """A search finished without ``trials`` of the trials planned for it."""
        if trials < 0:
            raise ValueError(f"cannot drop a negative number of trials (got {trials})")
        self.total = max(self.total - trials, self.done, 1)
