"""The published QoServe capacity protocol (``slidingserve capacity --protocol qoserve``).

QoServe's capacity experiment (its Figure 7; ``fig7.sh`` and ``paper_plot_scripts/fig7_cap.py``
on the ``niyama_asplos2026`` branch of microsoft/sarathi-serve), run in our simulator:

* a trial is ``num_requests`` requests (18,000 for ShareGPT) with Poisson arrivals at one rate,
  lengths drawn from the trace, no warm-up, every request run to completion, nothing arriving
  after the last one;
* three tiers drawn uniformly: tier 0 judged on TTFT only (6 s), tiers 1 and 2 on time to last
  token only (600 s, 1800 s); token pacing is not judged;
* decode deadlines from per-token thresholds (0.055 s for tier 0 on ShareGPT, 0.4 s otherwise),
  banked from the TTFT target (``decode_deadlines: banked``); the TTFT target of tiers 1-2 is
  what the public code derives for them, ``tier deadline - output_len_pred x 0.4`` with
  ``output_len_pred`` = 15 (594 s and 1794 s), which all three of its schedulers use;
* capacity: where the worst tier's violation rate crosses 1%, linearly interpolated between
  the highest passing and the lowest failing rate: over the rates the paper tested per
  scheduler (``PUBLISHED_RATES``, ``--published-rates``), or bisected to ``rel_tol``;
* the contenders as published: ``fcfs-256`` and ``edf-256`` (fixed 256-token steps, decodes
  first), ``qoserve-paper`` (``qoserve.PAPER_CONFIG``), beside ``slidingserve``;
* QoServe's step-time model of Llama-3-8B on an A100 (``--latency-model qoserve-a100``), 1000
  sequences per step at most, the KV cache of an 80 GB GPU at 90% utilisation.

A trial stops early only once the worst tier is surely past ``abort_tier_violation`` (the
failing side of the knee: its violation rate is then a lower bound, which the interpolation
reads as such).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slidingserve.capacity.config import CapacityConfig, Contender
from slidingserve.capacity.trial import TrialResult, load_latency_model
from slidingserve.metrics import summarize, worst_tier_violation_rate
from slidingserve.policy.qoserve import PAPER_CONFIG
from slidingserve.sim import SimConfig, ViolationMonitor, simulate
from slidingserve.slo import TierSet, load_tiers
from slidingserve.workload import Trace, WorkloadConfig, build_workload

QOSERVE_NUM_REQUESTS = 18_000


def qoserve_tiers() -> TierSet:
    """The protocol's three tiers (module docstring; ``--tiers qoserve-protocol``)."""
    return load_tiers("qoserve-protocol")


# The QPS the published experiment tested per scheduler (fig7.sh, ShareGPT): each capacity lies
# in its range. SlidingServe, not part of it, is swept over QoServe's range and beyond.
PUBLISHED_RATES: dict[str, tuple[float, ...]] = {
    "fcfs-256": (1.1, 1.3, 1.5, 1.7),
    "edf-256": (1.5, 1.7, 1.9, 2.1),
    "qoserve-paper": (1.7, 1.9, 2.1, 2.3),
    "slidingserve": (1.7, 1.9, 2.1, 2.3, 2.5, 2.7, 2.9),
}


def qoserve_contenders() -> list[Contender]:
    return [
        Contender(label="fcfs-256", policy="decodes-first", overrides={"budget": 256}),
        Contender(
            label="edf-256", policy="decodes-first", overrides={"budget": 256, "order": "edf"}
        ),
        Contender(label="qoserve-paper", policy="qoserve", overrides=dict(PAPER_CONFIG)),
        Contender(label="slidingserve", policy="slidingserve"),
    ]


def qoserve_sim_config() -> SimConfig:
    return SimConfig(max_num_seqs=1000, max_batch_tokens=8192, max_model_len=32768)


def qoserve_capacity_config(
    trace: Path | None,
    contenders: Sequence[Contender] | None = None,
    seeds: int = 3,
    num_requests: int = QOSERVE_NUM_REQUESTS,
    workers: int = 2,
    rel_tol: float = 0.03,
    latency_model: str = "qoserve-a100",
    curve_points: Sequence[float] = (1.0, 1.3),
    published_rates: bool = False,
) -> CapacityConfig:
    """The protocol as a ``CapacityConfig`` (the budgets of its contenders are pinned)."""
    return CapacityConfig(
        protocol="qoserve",
        contenders=list(contenders) if contenders is not None else qoserve_contenders(),
        trace=trace,
        latency_model=latency_model,
        sim=qoserve_sim_config(),
        seeds=seeds,
        protocol_requests=num_requests,
        rel_tol=rel_tol,
        start_rate=1.5,
        growth=1.25,
        curve_points=list(curve_points),
        heavy_load=1.3,
        reference="qoserve-paper",
        workers=workers,
        rates={k: list(v) for k, v in PUBLISHED_RATES.items()} if published_rates else {},
    )


def run_completion_trial(
    policy: str,
    overrides: dict[str, Any],
    rate: float,
    seed: int,
    num_requests: int,
    tiers: TierSet,
    sim: SimConfig,
    trace: Trace | None,
    latency_model: str | Path | None,
    abort_tier_violation: float = 0.1,
) -> TrialResult:
    """One protocol trial: every request to completion, or until the worst tier is surely
    past ``abort_tier_violation`` (then requests still unsettled count as violations)."""
    t0 = time.perf_counter()
    specs = build_workload(
        WorkloadConfig(arrival="poisson", rate=rate, num_requests=num_requests, seed=seed),
        tiers,
        trace=trace,
    )
    counts = Counter(s.tier for s in specs)
    monitor = ViolationMonitor(
        range(len(specs)),
        tiers,
        len(specs),
        tier_limits={t: math.floor(abort_tier_violation * n) for t, n in counts.items()},
    )
    result = simulate(
        specs,
        tiers,
        policy,
        sim.model_copy(update={"drain_s": None}),
        latency=load_latency_model(latency_model),
        policy_config=overrides,
        monitor=monitor,
    )
    summary = summarize(result.records, tiers)
    return TrialResult(
        rate=rate,
        seed=seed,
        worst_violation=worst_tier_violation_rate(summary),
        attainment=summary["overall"]["slo_attainment"],
        tier_violation={
            k: g["violation_rate"] for k, g in summary["tiers"].items() if g["requests"]
        },
        measured=num_requests,
        stopped_early=monitor.aborted,
        wall_s=time.perf_counter() - t0,
        stats=result.stats,
    )
