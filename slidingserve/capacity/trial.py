"""One capacity trial: a Poisson workload at one rate, simulated, summarised."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from slidingserve.metrics import summarize, worst_tier_violation_rate
from slidingserve.sim import SimConfig, ViolationMonitor, simulate
from slidingserve.slo import TierSet
from slidingserve.workload import Trace, WorkloadConfig, build_workload


@dataclass(frozen=True)
class TrialSpec:
    """Measure ``measured`` requests at ``rate`` after ``warmup`` requests, with arrivals going
    on after the window until every measured request is settled (see ``ViolationMonitor``)."""

    policy: str
    overrides: dict[str, Any]
    rate: float
    seed: int
    measured: int
    tiers: TierSet
    sim: SimConfig
    trace: Trace | None = None
    tier_mix: dict[str, float] | None = None
    warmup: int = 0
    abort_violation_frac: float = 0.1  # stop once this fraction is surely violated
    # Horizon, after the last measured arrival: measured requests without a first token by
    # then count as violations; those decoding are followed to the end (None: wait for every
    # deadline).
    horizon_s: float | None = 120.0


@dataclass
class TrialResult:
    rate: float
    seed: int
    worst_violation: float  # highest violation rate over tiers (measured requests)
    attainment: float  # overall SLO attainment (measured requests)
    tier_violation: dict[str, float]
    measured: int
    stopped_early: bool  # failed for sure; unsettled requests counted as violations
    wall_s: float
    stats: dict[str, Any] = field(default_factory=dict)


def settle_time(tiers: TierSet, longest_output: int) -> float:
    """Time after arrival by which every request's fate is known (its decisive deadline, or
    for tiers without an e2e deadline the TPOT target over the longest output)."""
    return max(
        t.e2e_s if t.e2e_s is not None else t.ttft_s + t.tpot_s * longest_output
        for t in tiers.values()
    )


def run_trial(spec: TrialSpec) -> TrialResult:
    t0 = time.perf_counter()
    lo, hi = spec.warmup, spec.warmup + spec.measured
    # Requests after the window keep the load on while the window drains.
    settle = settle_time(spec.tiers, 2048)
    if spec.horizon_s is not None:
        # + time for requests decoding at the horizon to finish (2048 tokens at 0.1 s/step)
        settle = min(settle, spec.horizon_s + 205.0)
    tail = math.ceil(spec.rate * settle) + 1
    workload = WorkloadConfig(
        arrival="poisson",
        rate=spec.rate,
        num_requests=hi + tail,
        seed=spec.seed,
        tier_mix=spec.tier_mix,
    )
    specs = build_workload(workload, spec.tiers, trace=spec.trace)
    sim = spec.sim.model_copy(update={"drain_s": 0.0})
    horizon = None if spec.horizon_s is None else specs[hi - 1].arrival_s + spec.horizon_s
    monitor = ViolationMonitor(
        range(lo, hi), spec.tiers, math.ceil(spec.abort_violation_frac * (hi - lo)), horizon
    )
    result = simulate(
        specs, spec.tiers, spec.policy, sim, policy_config=spec.overrides, monitor=monitor
    )
    # Requests cut at the horizon are violations even if the run went on and finished them.
    measured = [
        replace(r, finished=False) if r.key in monitor.cut_at_horizon else r
        for r in result.records[lo:hi]
    ]
    summary = summarize(measured, spec.tiers)
    return TrialResult(
        rate=spec.rate,
        seed=spec.seed,
        worst_violation=worst_tier_violation_rate(summary),
        attainment=summary["overall"]["slo_attainment"],
        tier_violation={
            k: g["violation_rate"] for k, g in summary["tiers"].items() if g["requests"]
        },
        measured=hi - lo,
        stopped_early=monitor.aborted,
        wall_s=time.perf_counter() - t0,
        stats=result.stats,
    )
