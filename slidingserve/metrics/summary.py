"""The ``summary.json`` format shared by the simulator and the engine/HTTP benchmarks.

``summarize(records, tiers)`` returns::

    {"format": "slidingserve.summary/v1", "duration_s", "num_requests",
     "overall": GROUP, "tiers": {name: GROUP}}

    GROUP = {"requests", "finished", "unfinished",
             "ttft_s" | "tpot_s" | "e2e_s": {"mean", "p50", "p90", "p99"} (finished requests),
             "slo_attainment"       fraction of requests meeting every target of their tier,
             "violations", "violation_rate"  = requests not meeting it (unfinished included),
             "token_attainment"     fraction of requests with every token on time (or None),
             "token_on_time_rate"   fraction of expected tokens on time (or None),
             "goodput_rps"          requests meeting their SLO per second of ``duration_s``,
             "throughput_rps"       finished requests per second,
             "preemptions"}

A request that never finished counts as a violation everywhere. ``duration_s`` defaults to
the span from the first arrival to the last event (last token or last arrival).

``windows(records, tiers, seconds)`` splits a run by arrival time: how a run moves towards (or
away from) its steady state, which one summary over the whole run hides (a queue that takes
ten minutes to build looks like a short excursion in a two-minute window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slidingserve.metrics.records import RequestRecord
from slidingserve.slo import TierSet

SUMMARY_FORMAT = "slidingserve.summary/v1"
MAX_WINDOWS = 10_000  # ``windows`` refuses to split a run finer than this


def summarize(
    records: Sequence[RequestRecord], tiers: TierSet, duration_s: float | None = None
) -> dict[str, Any]:
    if duration_s is None:
        duration_s = _span(records)
    by_tier: dict[str, list[RequestRecord]] = {name: [] for name in tiers}
    for r in records:
        tiers[r.tier]  # unknown tier -> TierConfigError naming it
        by_tier[r.tier].append(r)
    per_tier = {name: _group(rs, tiers, duration_s) for name, rs in by_tier.items()}
    return {
        "format": SUMMARY_FORMAT,
        "duration_s": duration_s,
        "num_requests": len(records),
        "overall": _group(list(records), tiers, duration_s),
        "tiers": per_tier,
    }


def worst_tier_violation_rate(summary: dict[str, Any]) -> float:
    """The highest violation rate over tiers that received requests."""
    rates = [g["violation_rate"] for g in summary["tiers"].values() if g["requests"] > 0]
    return max(rates) if rates else 0.0


def windows(
    records: Sequence[RequestRecord], tiers: TierSet, seconds: float
) -> list[dict[str, Any]]:
    """Per window of ``seconds`` of arrivals (from the first arrival on)::

        {"start_s", "end_s", "requests",
         "queued_at_end"   requests arrived by ``end_s`` without a first token at ``end_s``,
         "ttft_s": {"mean", "p50", "p90", "p99"} (requests of the window with a first token),
         "slo_attainment": {"overall", TIER: ...}  (None for a tier without requests)}
    """
    if not seconds > 0:
        raise ValueError(f"window length must be > 0 s (got {seconds})")
    if not records:
        return []
    arrival = np.array([r.arrival_s for r in records], dtype=np.float64)
    t0 = float(arrival.min())
    count = window_count(float(arrival.max()) - t0, seconds)
    if count > MAX_WINDOWS:
        raise ValueError(
            f"{seconds} s windows split this run into {count} windows (at most {MAX_WINDOWS})"
        )
    first = np.array(
        [math.inf if r.first_token_s is None else r.first_token_s for r in records],
        dtype=np.float64,
    )
    ttft = first - arrival  # inf without a first token
    met = np.array([r.meets_slo(tiers[r.tier]) for r in records], dtype=bool)
    tier = np.array([r.tier for r in records])
    out: list[dict[str, Any]] = []
    for i in range(count):
        start, end = i * seconds, (i + 1) * seconds  # from the first arrival
        inside = (arrival >= t0 + start) & (arrival < t0 + end)
        attained: dict[str, float | None] = {
            "overall": float(met[inside].mean()) if inside.any() else None
        }
        for name in tiers:
            sel = inside & (tier == name)
            attained[name] = float(met[sel].mean()) if sel.any() else None
        started = ttft[inside]
        out.append({
            "start_s": start,
            "end_s": end,
            "requests": int(inside.sum()),
            "queued_at_end": int(((arrival <= t0 + end) & (first > t0 + end)).sum()),
            "ttft_s": _stats(started[np.isfinite(started)].tolist()),
            "slo_attainment": attained,
        })
    return out


def window_count(span_s: float, seconds: float) -> int:
    """How many windows of ``seconds`` cover arrivals spread over ``span_s``."""
    return math.floor(span_s / seconds) + 1


def _span(records: Sequence[RequestRecord]) -> float:
    if not records:
        return 0.0
    start = min(r.arrival_s for r in records)
    end = max(max(r.arrival_s, r.last_token_s or r.arrival_s) for r in records)
    return end - start


def _group(records: list[RequestRecord], tiers: TierSet, duration_s: float) -> dict[str, Any]:
    n = len(records)
    done = [r for r in records if r.finished]
    met = sum(1 for r in records if r.meets_slo(tiers[r.tier]))
    late = [r.count_late_tokens(tiers[r.tier]) for r in records]
    known = [(x, r) for x, r in zip(late, records, strict=True) if x is not None]
    expected = sum(
        (r.expected_tokens if r.expected_tokens is not None else r.n_out) for _, r in known
    )
    late_total = sum(x for x, _ in known)
    return {
        "requests": n,
        "finished": len(done),
        "unfinished": n - len(done),
        "ttft_s": _stats([r.ttft_s for r in done]),
        "tpot_s": _stats([r.tpot_s for r in done]),
        "e2e_s": _stats([r.e2e_s for r in done]),
        "slo_attainment": met / n if n else None,
        "violations": n - met,
        "violation_rate": (n - met) / n if n else 0.0,
        "token_attainment": (
            sum(1 for x, r in known if x == 0 and r.finished) / len(known) if known else None
        ),
        "token_on_time_rate": (1.0 - late_total / expected) if known and expected else None,
        "goodput_rps": met / duration_s if duration_s > 0 else None,
        "throughput_rps": len(done) / duration_s if duration_s > 0 else None,
        "preemptions": sum(r.num_preemptions for r in records),
    }


def _stats(values: list[float | None]) -> dict[str, float | None]:
    xs = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if xs.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(xs, [50, 90, 99])
    return {"mean": _f(xs.mean()), "p50": _f(p50), "p90": _f(p90), "p99": _f(p99)}


def _f(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else float("nan")
