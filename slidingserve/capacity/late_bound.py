"""The fewest requests any schedule must make late, given a ceiling on tokens per second.

A request is on time only if all of its work (prompt + output tokens) runs between its arrival
and its deadline. So for any interval ``[t1, t2]``, the requests that arrive at or after ``t1``
and are due by ``t2`` and are kept on time must fit in ``C x (t2 - t1)`` tokens, where ``C``
is the most tokens per second the replica can run. If they do not, some of them are late, and
at least as many as dropping the largest first takes to make the rest fit. The largest such
count over a grid of intervals is a lower bound on the late requests of *any* schedule; with
an exact ``C``, preemptive earliest-deadline-first on one fluid server would meet this demand
condition on every interval, so the bound is tight for that idealised server (KV capacity,
step sizes and the one-token-per-step pace of decodes are left out, so a real replica may need
more late requests than the bound).

The bound is only as good as ``C``: it must be at least what the replica can run, or the bound
is not one. Over a long overload above the throughput ceiling the count is very sensitive to
``C`` (docs/results.md: one hour of the conversation trace at 28.05 req/s, 0.07% at 29,400
tokens/s and 0.36% at 29,000), so report it for a range of ``C``.

    python -m slidingserve.capacity.late_bound --trace TRACE --rate 28.05 --num-requests 40000 \\
        --tokens-per-s 29000,29400,31100 [--tiers tight]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slidingserve.slo import TierSet, load_tiers
from slidingserve.workload import RequestSpec, WorkloadConfig, build_workload, load_trace


@dataclass(frozen=True)
class LateBound:
    late: int  # at least this many requests are late under any schedule
    requests: int
    interval: tuple[float, float] | None  # the interval that gave the bound (None: no excess)
    in_interval: int  # requests arriving in it and due by its end

    @property
    def late_share(self) -> float:
        return self.late / self.requests if self.requests else 0.0


def due_s(spec: RequestSpec, tiers: TierSet) -> float:
    """When the request's last token is due: its end-to-end deadline, or for a tier without
    one, its TTFT target plus one TPOT per further output token."""
    tier = tiers[spec.tier]
    if tier.e2e_s is not None:
        return spec.arrival_s + tier.e2e_s
    return spec.arrival_s + tier.ttft_s + max(spec.output_len - 1, 0) * tier.tpot_s


def late_lower_bound(
    arrival: np.ndarray,
    work: np.ndarray,
    due: np.ndarray,
    tokens_per_s: float,
    grid: int = 64,
) -> LateBound:
    """The bound over intervals whose ends are ``grid`` quantiles of the arrivals (start) and
    of the deadlines (end); every interval checked gives a valid bound, so a coarser grid only
    gives a weaker one. Arrays are per request; ``work`` in tokens."""
    if not tokens_per_s > 0:
        raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    arrival, work, due = (np.asarray(x, dtype=np.float64) for x in (arrival, work, due))
    if not (arrival.shape == work.shape == due.shape) or arrival.ndim != 1:
        raise ValueError("arrival, work and due must be 1-D arrays of one length")
    n = arrival.size
    best = LateBound(0, n, None, 0)
    if n == 0:
        return best
    q = np.linspace(0.0, 1.0, grid + 1)
    starts = np.unique(np.quantile(arrival, q, method="lower"))
    ends = np.unique(np.quantile(due, q, method="higher"))
    for t1 in starts:
        after = arrival >= t1
        for t2 in ends:
            if t2 <= t1:
                continue
            sel = work[after & (due <= t2)]
            excess = float(sel.sum()) - tokens_per_s * (t2 - t1)
            if excess <= 0:
                continue
            largest = np.cumsum(np.sort(sel)[::-1])
            late = int(np.searchsorted(largest, excess, side="left")) + 1
            if late > best.late:
                best = LateBound(min(late, sel.size), n, (float(t1), float(t2)), int(sel.size))
    return best


def workload_bound(specs: Sequence[RequestSpec], tiers: TierSet, tokens_per_s: float,
                   grid: int = 64) -> LateBound:
    arrival = np.array([s.arrival_s for s in specs])
    work = np.array([s.prompt_len + s.output_len for s in specs], dtype=np.float64)
    due = np.array([due_s(s, tiers) for s in specs])
    return late_lower_bound(arrival, work, due, tokens_per_s, grid)


def positive_floats(text: str) -> list[float]:
    """argparse type: comma-separated positive numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be > 0: {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m slidingserve.capacity.late_bound",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", default=None, help="Trace CSV (default: synthetic lengths).")
    p.add_argument("--rate", type=float, required=True, help="Poisson arrival rate (req/s).")
    p.add_argument("--num-requests", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiers", default=None, help="Tier set name or YAML (default: qoserve).")
    p.add_argument("--tokens-per-s", type=positive_floats, required=True,
                   help="Comma-separated ceilings C (tokens/s) to bound with.")
    p.add_argument("--grid", type=int, default=64)
    a = p.parse_args(argv)
    if not a.rate > 0:
        p.error(f"--rate must be > 0, got {a.rate}")
    if a.num_requests < 1:
        p.error(f"--num-requests must be >= 1, got {a.num_requests}")
    if a.grid < 1:
        p.error(f"--grid must be >= 1, got {a.grid}")
    tiers = load_tiers(a.tiers)
    trace = load_trace(a.trace) if a.trace else None
    specs = build_workload(WorkloadConfig(rate=a.rate, num_requests=a.num_requests, seed=a.seed),
                           tiers, trace=trace)
    for c in a.tokens_per_s:
        b = workload_bound(specs, tiers, c, a.grid)
        where = (f"interval {b.interval[0]:.0f}-{b.interval[1]:.0f} s, {b.in_interval} requests"
                 if b.interval else "no interval over the ceiling")
        print(f"C={c:g} tokens/s: at least {b.late} of {b.requests} late "
              f"({100 * b.late_share:.2f}%); {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
