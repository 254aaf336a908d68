"""The physical limit beside a capacity table: the most requests/s a replica can sustain.

With no SLO, a rate is sustainable when the queue does not grow without bound. ``throughput_limit``
finds the highest such rate in the simulator, for a throughput-oriented schedule: decodes-first
chunked prefill (Sarathi's order) at each of ``budgets`` tokens per step, under the same latency
model, KV cache and engine limits as the capacity trials. A rate passes when, after
``num_requests`` Poisson arrivals with the trace's lengths, at most ``backlog_frac`` of them
still wait for their first token at the last arrival (a stable queue holds O(1) requests then;
an unstable one about ``(rate - service rate) / rate`` of all of them). The limit is the best
budget's highest passing rate, bisected to ``rel_tol``.

Why not saturate the replica (every request queued at once) and time it: a full queue keeps
the running set at its largest, and the decodes' attention over that many long contexts makes
each step slower than at the highest stable rate, so saturated throughput reads below the
capacities that policies reach. The limit is a reference for the table (each capacity is
printed as a fraction of it), not a proof that no schedule does better.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slidingserve.capacity.search import TrialCache, find_knee
from slidingserve.capacity.trial import load_latency_model
from slidingserve.latency import LatencyModel
from slidingserve.sim import SimConfig, simulate
from slidingserve.slo import SLOTier, TierSet
from slidingserve.workload import RequestSpec, Trace, WorkloadConfig, build_workload

# One tier whose targets nothing misses: the limit is judged on the queue alone.
_NO_SLO = TierSet(
    [SLOTier("any", ttft_s=1e9, tpot_s=1e9, e2e_s=None, weight=1.0, priority=0, share=1.0)],
    source="throughput-limit",
)


def unjudged(tiers: TierSet) -> TierSet:
    """``tiers`` with targets nothing misses (names, priorities and shares kept): a workload
    drawn for ``tiers`` judged on its queue alone."""
    return TierSet(
        [SLOTier(n, ttft_s=1e9, tpot_s=1e9, e2e_s=None, weight=1.0, priority=tiers[n].priority,
                 share=tiers[n].share) for n in tiers],
        source="throughput-limit",
    )


def backlog_fraction(
    specs: Sequence[RequestSpec], tiers: TierSet, sim: SimConfig, latency: LatencyModel,
    budget: int,
) -> float:
    """Fraction of ``specs`` without a first token when the last one arrives, served
    decodes-first at ``budget`` tokens per step (``tiers``: targets nothing misses)."""
    last = specs[-1].arrival_s
    result = simulate(
        specs,
        tiers,
        "decodes-first",
        sim.model_copy(update={"drain_s": 0.0}),  # stop at the last arrival
        latency=latency,
        policy_config={"budget": budget},
    )
    waiting = sum(r.first_token_s is None or r.first_token_s > last for r in result.records)
    return waiting / len(specs)


def backlog_at_last_arrival(
    rate: float,
    trace: Trace | None,
    latency_model: str | Path | None,
    sim: SimConfig,
    budget: int,
    num_requests: int,
    seed: int = 0,
) -> float:
    """``backlog_fraction`` of ``num_requests`` Poisson arrivals at ``rate`` with the trace's
    lengths."""
    specs = build_workload(
        WorkloadConfig(arrival="poisson", rate=rate, num_requests=num_requests, seed=seed),
        _NO_SLO,
        trace=trace,
    )
    return backlog_fraction(specs, _NO_SLO, sim, load_latency_model(latency_model), budget)


def highest_stable_rate(
    backlog: Callable[[float], float], start: float, backlog_frac: float = 0.02,
    rel_tol: float = 0.03,
) -> float:
    """The highest rate whose ``backlog(rate)`` stays within ``backlog_frac``: bracketed from
    ``start`` by factors of 1.25 and bisected (``search.find_knee``), the highest passing rate
    tried."""
    knee = find_knee(TrialCache(backlog), lambda frac: frac - backlog_frac, start, rel_tol,
                     growth=1.25)
    return knee.lo or 0.0


def sustainable_rate(
    trace: Trace | None,
    latency_model: str | Path | None,
    sim: SimConfig,
    budget: int,
    start: float,
    num_requests: int = 2000,
    backlog_frac: float = 0.02,
    rel_tol: float = 0.03,
) -> float:
    """``highest_stable_rate`` of the trace's workload (module docstring)."""
    return highest_stable_rate(
        lambda rate: backlog_at_last_arrival(rate, trace, latency_model, sim, budget, num_requests),
        start, backlog_frac, rel_tol,
    )


def throughput_limit(
    trace: Trace | None,
    latency_model: str | Path | None,
    sim: SimConfig,
    start: float,
    budgets: Sequence[int] = (512, 2048, 8192),
    num_requests: int = 2000,
) -> dict[str, Any]:
    """The best budget's sustainable rate (module docstring), with every budget's."""
    t0 = time.perf_counter()
    usable = [b for b in budgets if b <= sim.max_batch_tokens] or [sim.max_batch_tokens]
    per_budget = {
        b: sustainable_rate(trace, latency_model, sim, b, start, num_requests) for b in usable
    }
    best = max(per_budget, key=lambda b: per_budget[b])
    return {
        "rate_rps": per_budget[best],
        "budget": best,
        "per_budget": {str(b): v for b, v in per_budget.items()},
        "schedule": "decodes-first (fcfs), no SLO; highest rate with <= 2% of requests "
        "still queued at the last arrival",
        "num_requests": num_requests,
        "wall_s": time.perf_counter() - t0,
    }
