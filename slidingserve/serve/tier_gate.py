"""Refusing a whole tier at the ingress, for a moment, without asking a replica.

A replica refuses some requests whatever their prompt: every request of a tier, while it
holds its share of requests for that tier or while a higher tier's request waits too long
for its first token (``AdmissionConfig``; ``Rejected.tier_wide``). The router ranks replicas
that refuse a tier last, so when the replica it chose refuses the whole tier, every replica
it knew of did. Under overload most arrivals are such refusals, and each one costs a
routing decision and a call into an engine replica, whose process shares the machine the
engine computes on. ``TierGate`` remembers a tier-wide refusal for ``hold_s`` (about one
routing-stats period) and answers that tier's next requests itself: 429 with the replica's
reason and Retry-After, once the request has been validated (bad input still gets its 400)
and before it is routed. Higher tiers are never held by a lower tier's refusal. Per ingress
replica, no shared state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Closed:
    """A tier refused at the ingress until ``until_s`` (wall time)."""

    until_s: float
    reason: str
    retry_after_s: int


class TierGate:
    def __init__(self, hold_s: float | None):
        """``hold_s``: how long one tier-wide refusal closes the tier; None or 0: never."""
        self.hold_s = hold_s or 0.0
        self._closed: dict[int, Closed] = {}

    def close(self, priority: int, reason: str, retry_after_s: int, now: float) -> None:
        """A replica the router ranked first refused every request of ``priority``."""
        if self.hold_s > 0:
            self._closed[priority] = Closed(now + self.hold_s, reason, retry_after_s)

    def refusal(self, priority: int, now: float) -> Closed | None:
        """Why a request of ``priority`` is refused here, or None to send it to a replica."""
        closed = self._closed.get(priority)
        if closed is None:
            return None
        if now >= closed.until_s:
            del self._closed[priority]
            return None
        return closed
