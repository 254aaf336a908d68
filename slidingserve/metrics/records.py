"""Per-request records: what every host (simulator, engine and HTTP benchmarks) reports."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slidingserve.slo import SLOTier, TierSet

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


RECORD_COLUMNS = ("seed", "key", "tier", "arrival_s", "ttft_s", "tpot_s", "e2e_s", "n_out",
                  "expected_tokens", "finished", "met", "preemptions")


def write_records_csv(path: Path, seeded: Iterable[tuple[int, Sequence[RequestRecord]]],
                      tiers: TierSet) -> Path:
    """One row per request (``RECORD_COLUMNS``) of each workload seed's records, with the
    request-level verdict (``met``) of its tier: measured and simulated trials write the same
    file, so they compare request by request (``seed`` and ``key`` name a request)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(RECORD_COLUMNS)
        for seed, records in seeded:
            for r in records:
                out.writerow([seed, r.key, r.tier, f"{r.arrival_s:.6f}", _opt(r.ttft_s),
                              _opt(r.tpot_s), _opt(r.e2e_s), r.n_out, r.expected_tokens,
                              int(r.finished), int(r.meets_slo(tiers[r.tier])),
                              r.num_preemptions])
    return path


def _opt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"
