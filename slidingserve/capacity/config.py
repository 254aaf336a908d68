"""Capacity-search configuration: what to compare, on which workload, how precisely."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidingserve.sim import SimConfig, router_names

DEFAULT_BUDGETS = [256, 512, 1024, 2048, 4096, 8192]
# Measured window of a steady-state trial (s of arrivals). Near its throughput limit a policy's
# queue can take several minutes to build (sarathi at 512 tokens on the measured H100 model at
# 12 rps: every interactive request on time in the first 5 minutes, 69% in the next 5, none
# after 10), so a 60 s window from an empty system overrates it (12.42 rps at 1% against 11.56
# with a 600 s window, same seed; docs/results.md).
DEFAULT_TRIAL_SECONDS = 600.0
# SlidingServe components the ablation switches off, one at a time (config flags of the policy).
ABLATION_FLAGS = ["use_sorter", "use_aging", "use_deferral", "use_sliding_chunker",
                  "use_batch_constructor", "e2e_pace", "fit_decodes"]


class Contender(BaseModel):
    """One line of the comparison: a registered policy with config overrides, under a label."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    policy: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class CapacityConfig(BaseModel):
    """Capacity search: per contender, the highest Poisson rate meeting each SLO criterion.

    A trial measures ``clamp(rate x trial_seconds, min_requests, max_requests)`` Poisson
    arrivals with lengths from the trace (or the synthetic distribution), after
    ``rate x warmup_seconds`` warm-up arrivals; arrivals go on after the measured window
    until every measured request's fate is known, so the window drains under the same load.
    Criteria: worst tier's violation rate <= ``violation_target`` (``capacity_rps``) and
    overall attainment >= ``attainment_target`` (``capacity_rps_90``), both bounded by the
    backlog's growth (a steady-state lower bound on violations; see ``trial.py``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    contenders: list[Contender] = Field(min_length=1)
    ablation: list[Contender] = Field(default_factory=list)
    trace: Path | None = None
    tiers: Path | None = None
    # Trials: "steady-state" (measured window under continuing load, backlog-growth bound;
    # trial.py) or "qoserve" (the published protocol: ``protocol_requests`` Poisson requests
    # run to completion; protocol.py).
    protocol: Literal["steady-state", "qoserve"] = "steady-state"
    protocol_requests: int = Field(default=18_000, ge=10)
    # Latency model of policies and simulator: a name (``slidingserve.latency.named``) or a
    # predictor model directory (None: the roofline H100).
    latency_model: str | None = None
    tier_mix: dict[str, float] | None = None
    # Every latency target of the tiers multiplied by this (DistServe's SLO scale).
    slo_scale: float = Field(default=1.0, gt=0)
    sim: SimConfig = SimConfig()
    seeds: int = Field(default=3, ge=1)
    ablation_seeds: int | None = Field(default=None, ge=1)  # None: same as seeds
    budgets: list[int] = Field(default_factory=lambda: list(DEFAULT_BUDGETS))
    violation_target: float = Field(default=0.01, gt=0, lt=1)
    attainment_target: float = Field(default=0.9, gt=0, lt=1)
    trial_seconds: float = Field(default=DEFAULT_TRIAL_SECONDS, gt=0)
    min_requests: int = Field(default=1000, ge=10)
    max_requests: int = Field(default=20000, ge=10)
    warmup_seconds: float = Field(default=30.0, ge=0)
    # From this long after its measured window on, a trial whose backlog grows faster than
    # (1 - attainment_target) x the arrival rate is cut, its measured requests without a first
    # token counted as violations (bounds the cost of overloaded trials); otherwise measured
    # requests are followed to their deadlines (trial.py; None: never cut).
    horizon_seconds: float | None = Field(default=120.0, gt=0)
    # From the horizon on, stop a trial once it passes its criterion even with every unsettled
    # measured request counted as a violation (trial.py's early pass; the verdict is exact).
    early_pass: bool = True
    rel_tol: float = Field(default=0.04, gt=0, lt=1)  # bisection stops when (hi - lo) <= tol x hi
    sweep_rel_tol: float = Field(default=0.08, gt=0, lt=1)  # coarser, for the budget sweep
    start_rate: float | None = Field(default=None, gt=0)  # None: estimated from the workload
    growth: float = Field(default=1.35, gt=1)  # bracket expansion factor (small: fewer deep
    # overload trials, which are the expensive ones)
    # The load curve (attainment.png, heavy-load comparison) at these multiples of the
    # reference contender's capacity.
    curve_points: list[float] = Field(default_factory=lambda: [0.6, 0.8, 1.0, 1.15, 1.3, 1.5])
    reference: str | None = "qoserve"
    heavy_load: float = Field(default=1.3, gt=0)
    workers: int = Field(default=2, ge=1, le=64)
    # Per contender label: test these rates in ascending order (stopping at the first that
    # fails the 1% criterion) and interpolate, as the published experiment did, instead of
    # bracketing and bisecting.
    rates: dict[str, list[float]] = Field(default_factory=dict)
    # Measure the throughput-optimal rate (no SLO) for the table (capacity/limit.py).
    physical_limit: bool = False
    # Arrivals of the steady-state trials: Poisson, or Gamma gaps with CV ``cv`` (bursts).
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, gt=0, le=20)
    # Fleet mode (capacity/fleet.py): the first contender's capacity once per router in
    # ``routers`` and per replica count in ``fleet_replicas`` (empty: ``sim.replicas``),
    # instead of the policy comparison.
    routers: list[str] = Field(default_factory=list)
    # Also search the 90% criterion (its trials near the knee follow deferred requests to
    # their deadlines: the expensive part of a search).
    criterion_90: bool = True
    fleet_replicas: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> CapacityConfig:
        labels = [c.label for c in [*self.contenders, *self.ablation]]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"contender labels must be unique (got duplicates {dupes})")
        bad = [b for b in self.budgets if b < 1]
        if bad:
            raise ValueError(f"budgets must be >= 1 token (got {bad[0]})")
        if self.min_requests > self.max_requests:
            raise ValueError(f"min_requests {self.min_requests} > max_requests {self.max_requests}")
        if self.protocol == "qoserve" and (self.arrival != "poisson" or self.slo_scale != 1.0):
            raise ValueError(
                "the qoserve protocol fixes Poisson arrivals and its tiers "
                f"(got arrival {self.arrival!r}, slo_scale {self.slo_scale})"
            )
        known = set(router_names())
        bad_routers = [r for r in self.routers if r not in known]
        if bad_routers:
            raise ValueError(
                f"unknown router {bad_routers[0]!r} in routers (known: {', '.join(sorted(known))})"
            )
        if len(set(self.routers)) != len(self.routers):
            raise ValueError(f"routers must be distinct (got {self.routers})")
        if any(n < 1 for n in self.fleet_replicas):
            raise ValueError(f"fleet_replicas must be >= 1 (got {self.fleet_replicas})")
        if self.heavy_load not in self.curve_points and self.curve_points:
            raise ValueError(
                f"heavy_load {self.heavy_load} must be one of curve_points {self.curve_points}"
            )
        return self

    def trial_requests(self, rate: float) -> tuple[int, int]:
        """(warm-up, measured) request counts of a trial at ``rate``."""
        measured = min(max(rate * self.trial_seconds, self.min_requests), self.max_requests)
        return int(rate * self.warmup_seconds), int(measured)


def ablation_contenders(base: str = "slidingserve") -> list[Contender]:
    """SlidingServe with each component switched off in turn."""
    return [
        Contender(
            label=f"{base}-no-{flag.removeprefix('use_').replace('_', '-')}",
            policy=base,
            overrides={flag: False},
        )
        for flag in ABLATION_FLAGS
    ] + [Contender(label=f"{base}-no-kv-pacer", policy=base,
                   overrides={"kv_pacer": {"enabled": False}}),
         Contender(label=f"{base}-no-learned-reserve", policy=base,  # the fixed decode reserve
                   overrides={"decode_time": {"quantile": None}}),
         Contender(label=f"{base}-no-step-margin", policy=base,  # plans to the exact prediction
                   overrides={"step_error": {"enabled": False}}),
         Contender(label=f"{base}-no-ttft-floor", policy=base,  # the chunk blind to queued TTFTs
                   overrides={"chunker": {"ttft_floor": False}})]
