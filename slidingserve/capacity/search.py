"""Knee search: the highest rate at which a trial still meets a criterion.

``excess(trial) <= 0`` means the trial passes (e.g. worst-tier violation rate - 1%). Starting
from a guess, the rate is multiplied (or divided) by ``growth`` until a passing rate ``lo``
and a failing rate ``hi`` bracket the knee, then bisected until ``hi - lo <= rel_tol * hi``.
The capacity is the linear interpolation of ``excess`` between ``lo`` and ``hi`` at zero (QoServe's
"bisection with linear interpolation at the knee"). Trials are cached by rate, so a second
criterion reuses the first one's trials. Noise can make ``excess`` non-monotone; the search
simply keeps the highest passing rate below the lowest failing rate it has seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")  # what a trial returns: a TrialResult, or any outcome ``excess`` can judge


@dataclass
class Knee:
    capacity: float  # interpolated rate at excess = 0 (0.0: fails even at min_rate)
    lo: float | None  # highest passing rate tried below hi
    hi: float | None  # lowest failing rate tried (None: passes even at max_rate)
    trials: int  # trials run for this knee (cache hits excluded)


class TrialCache(Generic[T]):
    def __init__(self, evaluate: Callable[[float], T]):
        self._evaluate = evaluate
        self.results: dict[float, T] = {}
        self.runs = 0

    def __call__(self, rate: float) -> T:
        key = round(rate, 9)
        if key not in self.results:
            self.results[key] = self._evaluate(key)
            self.runs += 1
        return self.results[key]


def find_knee(
    cache: TrialCache[T],
    excess: Callable[[T], float],
    start: float,
    rel_tol: float = 0.04,
    growth: float = 1.6,
    min_rate: float = 1e-3,
    max_rate: float = 1e4,
) -> Knee:
    runs0 = cache.runs
    lo, hi = _bracket_from_cache(cache, excess)
    rate = start if lo is None and hi is None else None
    while lo is None or hi is None:
        if rate is None:
            rate = hi / growth if lo is None else lo * growth  # type: ignore[operator]
        if rate < min_rate:
            return Knee(0.0, None, hi, cache.runs - runs0)
        if rate > max_rate:
            return Knee(float(lo or max_rate), lo, None, cache.runs - runs0)
        if excess(cache(rate)) <= 0:
            lo = rate if lo is None or rate > lo else lo
        else:
            hi = rate if hi is None or rate < hi else hi
        rate = None
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if excess(cache(mid)) <= 0:
            lo = mid
        else:
            hi = mid
    e_lo, e_hi = excess(cache(lo)), excess(cache(hi))
    frac = (0.0 - e_lo) / (e_hi - e_lo) if e_hi > e_lo else 0.0
    return Knee(lo + (hi - lo) * min(max(frac, 0.0), 1.0), lo, hi, cache.runs - runs0)


def _bracket_from_cache(
    cache: TrialCache[T], excess: Callable[[T], float]
) -> tuple[float | None, float | None]:
    """Lowest failing rate seen, and the highest passing rate below it."""
    rates = sorted(cache.results)
    failing = [r for r in rates if excess(cache.results[r]) > 0]
    hi = failing[0] if failing else None
    passing = [r for r in rates if excess(cache.results[r]) <= 0 and (hi is None or r < hi)]
    return (passing[-1] if passing else None), hi


def sweep_knee(points: list[tuple[float, float]]) -> float:
    """Capacity from a rate sweep of ``(rate, excess)`` (passing when ``excess <= 0``): where
    ``excess`` crosses zero between the last passing rate before the first failing one and that
    failing rate (linear interpolation, as QoServe's ``fig7_cap.py``); the highest rate when
    none fails; 0.0 when the lowest already fails."""
    points = sorted(points)
    for i, (rate, e) in enumerate(points):
        if e > 0:
            if i == 0:
                return 0.0
            r0, e0 = points[i - 1]
            return r0 + (rate - r0) * min(max((0.0 - e0) / (e - e0), 0.0), 1.0)
    return points[-1][0] if points else 0.0
