"""Capacity searches of ``slidingserve bench engine`` over a trial function.

``evaluate(rate)`` runs (or looks up) one trial and returns its summary; the searches find the
highest passing rate for both capacity definitions: by bracketing and bisection
(``search_capacities``), or along a fixed rate sweep (``sweep_capacities``). The simulator's
harness has its synchronous twin, ``slidingserve.capacity.search.find_knee``.
"""

from __future__ import annotations

from typing import Any

from slidingserve.capacity.search import sweep_knee


async def search_capacities(evaluate: Any, start_rps: float, rel_tol: float, max_trials: int
                            ) -> dict[str, Any]:
    """Both capacity definitions from one trial function (trials shared through its cache)."""
    knee_1 = await bisect_knee(evaluate, lambda s: s["worst_tier_violation_rate"] - 0.01,
                               start_rps, rel_tol, max_trials)
    knee_90 = await bisect_knee(evaluate, lambda s: 0.9 - s["overall"]["slo_attainment"],
                                start_rps, rel_tol, max_trials)
    return {"capacity_rps": knee_1, "capacity_rps_90": knee_90, "budget": None}


async def sweep_capacities(evaluate: Any, rates: list[float]) -> dict[str, Any]:
    results: list[tuple[float, dict[str, Any]]] = []
    failed_in_a_row = 0
    for rate in sorted(rates):
        r = await evaluate(rate)
        results.append((rate, r))
        failed = r["worst_tier_violation_rate"] > 0.01 and r["overall"]["slo_attainment"] < 0.9
        failed_in_a_row = failed_in_a_row + 1 if failed else 0
        if failed_in_a_row == 2:
            break
    knee_1, knee_90 = sweep_knees([(x, r["worst_tier_violation_rate"],
                                    r["overall"]["slo_attainment"]) for x, r in results])
    return {"capacity_rps": knee_1, "capacity_rps_90": knee_90, "budget": None}


def sweep_knees(points: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Both capacities of a rate sweep of ``(rate, worst tier's violation rate, overall
    attainment)``: worst tier <= 1% late, and >= 90% attained (``sweep_knee`` each)."""
    return (sweep_knee([(x, worst - 0.01) for x, worst, _ in points]),
            sweep_knee([(x, 0.9 - attained) for x, _, attained in points]))


async def bisect_knee(evaluate: Any, excess: Any, start: float, rel_tol: float, max_trials: int,
                      growth: float = 1.6) -> float:
    """Highest passing rate (``excess <= 0``), interpolated at the knee; 0.0 if none passes."""
    lo: tuple[float, float] | None = None  # (rate, excess) passing
    hi: tuple[float, float] | None = None  # failing
    rate, used = start, 0
    while (lo is None or hi is None) and used < max_trials:
        e = excess(await evaluate(rate))
        used += 1
        if e <= 0:
            lo = (rate, e)
            rate *= growth
        else:
            hi = (rate, e)
            rate /= growth
        if lo is not None and hi is not None and lo[0] > hi[0]:  # noise: keep it monotone
            lo = None
    while lo is not None and hi is not None and hi[0] - lo[0] > rel_tol * hi[0] \
            and used < max_trials:
        mid = 0.5 * (lo[0] + hi[0])
        e = excess(await evaluate(mid))
        used += 1
        if e <= 0:
            lo = (mid, e)
        else:
            hi = (mid, e)
    if lo is None:
        return 0.0
    if hi is None or hi[1] <= lo[1]:
        return lo[0]
    frac = (0.0 - lo[1]) / (hi[1] - lo[1])
    return lo[0] + (hi[0] - lo[0]) * min(max(frac, 0.0), 1.0)
