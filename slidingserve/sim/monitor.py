"""Early stop for measurement runs: stop once the measured requests' fates are known.

A capacity trial measures a window of requests while arrivals go on after it (so the system
stays loaded while the window drains: deferring work past the window gains nothing). A
``ViolationMonitor`` watches the measured requests. A request is *settled* when it finished
(judged against every target), or when its decisive deadline passed (its end-to-end deadline,
or for tiers without one its TTFT deadline) and it can no longer meet its SLO (unfinished with
an e2e deadline, or no first token yet). The simulator stops when every measured request is
settled, or when more than ``max_violations`` are surely violated (the run then fails for
sure; requests still unsettled count as violations).

With a ``horizon_s`` (absolute time), measured requests that have not produced a first token
by then are counted as violations (pessimistic: a trial cannot wait out 1800 s deadlines),
while requests already decoding are followed until they finish, so no output length, however
long, turns into a violation by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from slidingserve.sim.request import SimRequest
from slidingserve.slo import TierSet


class RunMonitor(Protocol):
    """What ``simulate`` asks of a monitor: it is bound to the run's requests, then asked
    every ``monitor_every_s`` simulated seconds whether to stop (requests settled up to then)."""

    def bind(self, reqs: Sequence[SimRequest]) -> None: ...

    def should_stop(self, now: float) -> bool: ...


class ViolationMonitor:
    def __init__(
        self,
        measured: Sequence[int],
        tiers: TierSet,
        max_violations: int,
        horizon_s: float | None = None,
        tier_limits: dict[str, int] | None = None,
    ):
        self.tiers = tiers
        self.horizon_s = horizon_s
        self.max_violations = max_violations
        # Also stop once a tier has more than this many sure violations (None: no such limit).
        self.tier_limits = tier_limits
        self.measured = list(measured)
        self.violations = 0  # surely violated so far
        self.tier_violations: dict[str, int] = {}
        self.aborted = False  # stopped because violations exceeded the limit
        self.cut_at_horizon: set[int] = set()  # keys judged violated at the horizon

    def bind(self, reqs: Sequence[SimRequest]) -> None:
        """Attach the run's requests (called by ``simulate``)."""
        self._open = sorted((reqs[i] for i in self.measured), key=lambda r: r.spec.arrival_s)
        self.violations = 0
        self.tier_violations = {}
        self.aborted = False
        self.cut_at_horizon = set()

    def should_stop(self, now: float) -> bool:
        still_open = []
        violated = []
        for i, r in enumerate(self._open):
            if r.spec.arrival_s > now:  # in arrival order: the rest has not arrived either
                still_open += self._open[i:]
                break
            tier = self.tiers[r.spec.tier]
            if r.lost:  # started on a replica that failed: it never finishes
                violated.append(r)
                continue
            if r.finished:
                if not r.record().meets_slo(tier):
                    violated.append(r)
                continue
            decisive = r.spec.arrival_s + (tier.e2e_s if tier.e2e_s is not None else tier.ttft_s)
            if now > decisive and (tier.e2e_s is not None or r.view.first_token_s is None):
                violated.append(r)
                continue
            if (
                self.horizon_s is not None
                and now >= self.horizon_s
                and r.view.first_token_s is None
            ):
                violated.append(r)
                self.cut_at_horizon.add(r.spec.key)
                continue
            still_open.append(r)
        self._open = still_open
        self.violations += len(violated)
        for r in violated:
            self.tier_violations[r.spec.tier] = self.tier_violations.get(r.spec.tier, 0) + 1
        limits = self.tier_limits or {}
        self.aborted = self.violations > self.max_violations or any(
            n > limits[t] for t, n in self.tier_violations.items() if t in limits
        )
        return self.aborted or not still_open
