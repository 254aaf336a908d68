"""Progress of a long simulation: a line every so many seconds of wall time.

A two-hour overload run of a policy with a deep queue takes an hour or more to simulate;
``SimProgress`` is a ``RunMonitor`` that never stops the run and, at most every ``every_s``
seconds of wall time, reports how far it is: simulated time against the last arrival, requests
arrived, finished, and waiting for their first token (the queue), and the wall time so far.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Sequence

from slidingserve.sim.request import SimRequest


class SimProgress:
    def __init__(self, emit: Callable[[str], None], every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        if not every_s > 0:
            raise ValueError(f"progress interval must be > 0 s (got {every_s!r})")
        self.emit, self.every_s, self.clock = emit, every_s, clock
        self._reqs: Sequence[SimRequest] = ()
        self._arrivals: list[float] = []
        self._start = self._last = 0.0

    def bind(self, reqs: Sequence[SimRequest]) -> None:
        self._reqs = reqs
        self._arrivals = [r.spec.arrival_s for r in reqs]  # the simulator's order: by arrival
        self._start = self._last = self.clock()

    def should_stop(self, now: float) -> bool:
        t = self.clock()
        if t - self._last >= self.every_s:
            self._last = t
            self.emit(self.line(now, t - self._start))
        return False

    def line(self, now: float, wall_s: float) -> str:
        arrived = bisect_right(self._arrivals, now)
        head = self._reqs[:arrived]
        finished = sum(1 for r in head if r.finished)
        queued = sum(1 for r in head if r.view.first_token_s is None and not r.lost)
        last = self._arrivals[-1] if self._arrivals else 0.0
        minutes, seconds = divmod(int(wall_s), 60)
        return (f"simulated {now:,.0f} s of {last:,.0f} s of arrivals: {arrived:,} of "
                f"{len(self._reqs):,} requests arrived, {finished:,} finished, {queued:,} "
                f"waiting for a first token; {minutes}:{seconds:02d} wall")
