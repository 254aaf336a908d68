"""One capacity trial: a Poisson (or Gamma) workload at one rate, simulated, summarised.

What a trial measures (the same rule for every policy). ``measured`` requests arrive at
``rate`` after ``warmup`` warm-up arrivals; arrivals go on after the window, so the system stays
loaded while the window drains. Each measured request is judged against its own tier's targets:
a request deferred past the window but finished within its deadline (600 s / 1800 s for the
default batch tiers) is on time, one that misses it is a violation.

Why not a fixed cut-off. An earlier rule counted every measured request without a first token
30-120 s after the window as a violation. That penalised a policy for using the slack its tiers
grant (deferring batch work that would still finish within its deadline), and it did not measure
steady state either: a short window started from an empty system hides an overload for a
while, so rates above what a policy can sustain passed. Under 600/1800 s deadlines a finite
trial cannot wait for every deadline of an overloaded system, and it need not: what decides the
long run is whether the backlog grows.

Steady-state (overload) bound. From the start of the window on, the monitor samples the backlog
(arrived requests without a first token: the queue) every check; ``growth`` is its least-
squares slope over the arrival rate, the fraction of arriving requests the system does not keep
up with, fitted on the second half of the samples so far (``STEADY_FROM``): the ramp from an
empty system up to a deep but stable queue is not growth, or a policy that holds work for later
within its deadlines (QoServe's relegation, SlidingServe's deferral) would be judged more
harshly than FCFS for the same sustained load. (Not the unfinished requests: from an empty
system their number ramps up over the lifetime of long outputs, which read as growth far below
the knee. Decodes cannot hide a backlog: they are judged by their TPOT, and the running set and
the KV cache are bounded, so work the system cannot keep up with ends up queued.) In the long
run at least that fraction cannot be served on time (nothing is dropped; the backlog grows
without bound), so a trial's worst-tier violation rate is at least ``growth`` and its
attainment at most ``1 - growth``. From ``horizon_s`` after the window on, once ``growth``
exceeds ``overload_cut`` (the harness uses 1 - the attainment target: such a trial fails both
criteria) the trial stops and measured requests still without a first token count as violations
(those decoding are followed to the end); while the backlog is not growing that fast, deferred
requests are followed to their deadlines, however long the policy defers them. The bound is
noisy near the knee (a stationary backlog's slope is zero only on average, and half the samples
make it noisier): that pushes the knee down by the same rule for every policy.

Early pass (``TrialSpec.early_pass``). The mirror of the cut: from the horizon on, once the
trial passes its criterion even if every measured request still unsettled were a violation
(and ``growth`` is within it too), nothing that happens later can make it fail, so it stops.
What that saves: a policy that defers a few batch requests to their 1800 s deadlines (on the
slow half of a mixed fleet, under Ray Serve's power-of-two router) held a passing 16-replica
trial for 1,686 simulated seconds, 36 requests of ~4,600 batch ones still unstarted after the
first 600. The violation counts cannot turn the verdict any more; the growth bound is the one
fitted when the trial stops (as for the cut, a later fit could differ). The figure an
early-passed trial reports (``worst_violation``, ``attainment``, which the search interpolates
between its last passing and failing rates) counts the unsettled requests as on time, what a
deferral to the deadline plans for, and ``unsettled`` says how many there were.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency import load_latency_model as load_named_latency_model
from slidingserve.metrics import summarize, worst_tier_violation_rate
from slidingserve.sim import SimConfig, ViolationMonitor, simulate
from slidingserve.sim.request import SimRequest
from slidingserve.slo import TierSet
from slidingserve.workload import Trace, WorkloadConfig, build_workload

# Backlog growth is fitted on the samples from this fraction of the observed span on.
STEADY_FROM = 0.5


@dataclass(frozen=True)
class EarlyPass:
    """Stop a trial once it passes for sure (module docstring): every tier's violation rate
    (``per_tier``; the 1% criterion) or the overall one (the 90% criterion) is at most
    ``share`` with every unsettled measured request counted as a violation, and the backlog's
    growth is at most ``share`` too."""

    share: float
    per_tier: bool = True


@dataclass(frozen=True)
class TrialSpec:
    """Measure ``measured`` requests at ``rate`` after ``warmup`` requests, with arrivals going
    on after the window until every measured request is settled (module docstring)."""

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
    # After the horizon, cut the trial once the backlog grows by more than this fraction of
    # the arrivals (module docstring).
    overload_cut: float = 0.1
    # Seconds after the last measured arrival from which an overloaded trial may be cut
    # (None: never cut; every measured request is followed to its deadline).
    horizon_s: float | None = 120.0
    # A named model or a trained predictor model directory (``predictor.train --out``);
    # None: the roofline.
    latency_model: str | Path | None = None
    # Arrival process of the whole run: Poisson, or Gamma gaps with this CV (bursts).
    arrival: str = "poisson"
    cv: float = 1.0
    # Stop once the trial surely passes this criterion (None: follow every measured request).
    early_pass: EarlyPass | None = None


@functools.lru_cache(maxsize=4)
def load_latency_model(spec: str | Path | None) -> LatencyModel:
    """The latency model every policy of a trial plans with and the simulator times steps with
    (``slidingserve.latency.named``: a name, a predictor bundle's directory, or None for the
    roofline). Loaded once per process."""
    return load_named_latency_model(spec)


@dataclass
class TrialResult:
    rate: float
    seed: int
    worst_violation: float  # highest violation rate over tiers, at least ``growth``
    attainment: float  # overall SLO attainment, at most 1 - ``growth``
    tier_violation: dict[str, float]  # as measured (without the growth bound)
    measured: int
    stopped_early: bool  # failed for sure; unsettled requests counted as violations
    wall_s: float
    growth: float = 0.0  # backlog growth / arrival rate (steady-state violation lower bound)
    stats: dict[str, Any] = field(default_factory=dict)
    cut: bool = False  # cut as overloaded (growth > the spec's overload_cut after the horizon)
    passed_early: bool = False  # stopped once it passed for sure (``TrialSpec.early_pass``)
    unsettled: int = 0  # measured requests unsettled at an early pass, counted as on time


class SteadyStateMonitor(ViolationMonitor):
    """``ViolationMonitor`` plus the backlog-growth bound and the overload cut (module doc)."""

    def __init__(
        self,
        measured: Sequence[int],
        tiers: TierSet,
        max_violations: int,
        rate: float,
        window: tuple[float, float],
        horizon_s: float | None,
        max_growth: float,
        early_pass: EarlyPass | None = None,
    ):
        super().__init__(measured, tiers, max_violations, None)
        self.rate = rate
        self.window_start, self.window_end = window
        self.cut_from = None if horizon_s is None else self.window_end + horizon_s
        self.max_growth = max_growth
        self.early_pass = early_pass
        self.growth = 0.0
        self.overloaded = False
        self.passed = False  # stopped by the early pass
        self.unsettled: dict[str, int] = {}  # per tier, measured requests open at that pass

    def bind(self, reqs: Sequence[SimRequest]) -> None:
        super().bind(reqs)
        self._reqs = reqs
        self._next = 0  # first request not yet arrived
        self._backlog: list[SimRequest] = []
        self._samples: list[tuple[float, int]] = []
        self.growth = 0.0
        self.overloaded = False
        self.passed = False
        self.unsettled = {}
        self._tier_counts: dict[str, int] = {}
        for i in self.measured:
            tier = reqs[i].spec.tier
            self._tier_counts[tier] = self._tier_counts.get(tier, 0) + 1

    def should_stop(self, now: float) -> bool:
        while self._next < len(self._reqs) and self._reqs[self._next].spec.arrival_s <= now:
            self._backlog.append(self._reqs[self._next])
            self._next += 1
        self._backlog = [r for r in self._backlog if r.view.first_token_s is None]
        if now >= self.window_start and not self.overloaded:  # frozen once cut
            self._samples.append((now, len(self._backlog)))
            self.growth = backlog_growth(self._samples, self.rate)
        if (
            self.cut_from is not None
            and now >= self.cut_from
            and not self.overloaded
            and self.growth > self.max_growth
        ):
            self.overloaded = True
            self.horizon_s = now  # the base class cuts requests without a first token
        if super().should_stop(now):
            return True
        if self._passes_for_sure(now):
            self.passed = True
            return True
        return False

    def _passes_for_sure(self, now: float) -> bool:
        rule = self.early_pass
        if (
            rule is None
            or self.cut_from is None
            or now < self.cut_from
            or self.overloaded
            or self.growth > rule.share
        ):
            return False
        open_by_tier: dict[str, int] = {}
        for r in self._open:
            open_by_tier[r.spec.tier] = open_by_tier.get(r.spec.tier, 0) + 1
        if rule.per_tier:
            sure = all(
                (self.tier_violations.get(t, 0) + open_by_tier.get(t, 0)) / n <= rule.share
                for t, n in self._tier_counts.items()
            )
        else:
            total = sum(self._tier_counts.values())
            sure = (self.violations + len(self._open)) / max(total, 1) <= rule.share
        if sure:
            self.unsettled = open_by_tier
        return sure


def backlog_growth(
    samples: Sequence[tuple[float, int]], rate: float, steady_from: float = STEADY_FROM
) -> float:
    """Least-squares slope of the backlog (requests) over time, over the arrival rate, >= 0,
    fitted on the steady part: the samples from ``steady_from`` of the observed span on (the
    ramp from an empty system to a deep but stable queue is not growth)."""
    if not samples or rate <= 0:
        return 0.0
    t0, t1 = samples[0][0], samples[-1][0]
    start = t0 + steady_from * (t1 - t0)
    steady = [s for s in samples if s[0] >= start]
    if len(steady) < 3:
        return 0.0
    t = np.array([s[0] for s in steady])
    q = np.array([s[1] for s in steady], dtype=np.float64)
    tc = t - t.mean()
    denom = float((tc * tc).sum())
    if denom <= 0:
        return 0.0
    return max(float((tc * (q - q.mean())).sum()) / denom / rate, 0.0)


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
    # Requests after the window keep the load on until the last measured deadline.
    tail = math.ceil(spec.rate * settle_time(spec.tiers, 2048)) + 1
    workload = WorkloadConfig(
        arrival=spec.arrival,  # type: ignore[arg-type]  # validated by CapacityConfig
        cv=spec.cv,
        rate=spec.rate,
        num_requests=hi + tail,
        seed=spec.seed,
        tier_mix=spec.tier_mix,
    )
    specs = build_workload(workload, spec.tiers, trace=spec.trace)
    sim = spec.sim.model_copy(update={"drain_s": 0.0})
    monitor = SteadyStateMonitor(
        range(lo, hi),
        spec.tiers,
        math.ceil(spec.abort_violation_frac * (hi - lo)),
        spec.rate,
        (specs[lo].arrival_s, specs[hi - 1].arrival_s),
        spec.horizon_s,
        spec.overload_cut,
        spec.early_pass,
    )
    result = simulate(
        specs,
        spec.tiers,
        spec.policy,
        sim,
        latency=load_latency_model(spec.latency_model),
        policy_config=spec.overrides,
        monitor=monitor,
    )
    # Requests cut as overloaded are violations even if the run went on and finished them.
    measured = [
        replace(r, finished=False) if r.key in monitor.cut_at_horizon else r
        for r in result.records[lo:hi]
    ]
    summary = summarize(measured, spec.tiers)
    # An early pass left requests unfinished that the summary counts as violations: on time.
    for tier, n_open in monitor.unsettled.items():
        g = summary["tiers"][tier]
        g["violation_rate"] = (g["violations"] - n_open) / g["requests"]
    overall = summary["overall"]
    n_unsettled = sum(monitor.unsettled.values())
    attained = (overall["requests"] - overall["violations"] + n_unsettled) / overall["requests"]
    growth = monitor.growth
    return TrialResult(
        rate=spec.rate,
        seed=spec.seed,
        worst_violation=max(worst_tier_violation_rate(summary), growth),
        attainment=min(attained, 1.0 - growth),
        tier_violation={
            k: g["violation_rate"] for k, g in summary["tiers"].items() if g["requests"]
        },
        measured=hi - lo,
        stopped_early=monitor.aborted or monitor.overloaded,
        wall_s=time.perf_counter() - t0,
        growth=growth,
        stats=result.stats,
        cut=monitor.overloaded,
        passed_early=monitor.passed,
        unsettled=n_unsettled,
    )
