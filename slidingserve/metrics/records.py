"""Per-request records: what every host (simulator, engine and HTTP benchmarks) reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slidingserve.slo import SLOTier

_EPS = 1e-9  # float slack when comparing a measured time to its target


@dataclass(slots=True)
class RequestRecord:
    """The outcome of one request. Times are on one clock (seconds); arrival included.

    ``token_times`` (emission time of each output token) is optional: without it, a host
    may report ``late_tokens`` (tokens past their token-level deadline) computed online.
    ``expected_tokens`` is the output length the request should have produced (defaults to
    ``n_out``); tokens never produced count as late.
    """

    arrival_s: float
    tier: str
    first_token_s: float | None
    last_token_s: float | None
    n_out: int  # output tokens produced
    finished: bool
    token_times: Sequence[float] | None = None
    late_tokens: int | None = None
    expected_tokens: int | None = None
    key: int | None = None
    num_preemptions: int = 0

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.last_token_s is None else self.last_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """(last - first) / (n_out - 1); None with fewer than two tokens."""
        if self.first_token_s is None or self.last_token_s is None or self.n_out < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (self.n_out - 1)

    def meets_slo(self, tier: SLOTier) -> bool:
        """Request-level attainment: finished and every target its tier judges met."""
        if not self.finished or self.first_token_s is None or self.last_token_s is None:
            return False
        if tier.judges("ttft") and self.first_token_s - self.arrival_s > tier.ttft_s + _EPS:
            return False
        tpot = self.tpot_s
        if tier.judges("tpot") and tpot is not None and tpot > tier.tpot_s + _EPS:
            return False
        return not (
            tier.judges("e2e")
            and tier.e2e_s is not None
            and self.last_token_s - self.arrival_s > tier.e2e_s + _EPS
        )

    def count_late_tokens(self, tier: SLOTier) -> int | None:
        """Tokens that missed their token-level deadline, plus tokens never produced."""
        expected = self.expected_tokens if self.expected_tokens is not None else self.n_out
        missing = max(expected - self.n_out, 0)
        if self.token_times is not None:
            late = sum(
                1
                for i, t in enumerate(self.token_times, start=1)
                if t > token_due(tier, self.arrival_s, i) + _EPS
            )
            return late + missing
        if self.late_tokens is not None:
            return self.late_tokens + missing
        return None


def token_due(tier: SLOTier, arrival_s: float, index: int) -> float:
    """Due time of output token ``index`` (1-based): token-level TTFT/TPOT, capped by e2e."""
    due = tier.token_deadline(arrival_s, index)
    if tier.e2e_s is not None:
        due = min(due, arrival_s + tier.e2e_s)
    return due
