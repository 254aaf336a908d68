"""Workloads: request specs, arrival processes, trace loading, tier mixes."""

from slidingserve.workload.arrivals import gamma_arrivals, poisson_arrivals
from slidingserve.workload.build import WorkloadConfig, build_workload
from slidingserve.workload.spec import RequestSpec
from slidingserve.workload.synthetic import synthetic_lengths, workload_lengths
from slidingserve.workload.tiermix import (
    TierMixError,
    assign_tiers,
    normalise_mix,
    parse_tier_mix,
    top_tier_mix,
)
from slidingserve.workload.trace import Trace, TraceError, load_trace

__all__ = [
    "RequestSpec",
    "TierMixError",
    "Trace",
    "TraceError",
    "WorkloadConfig",
    "assign_tiers",
    "build_workload",
    "gamma_arrivals",
    "load_trace",
    "normalise_mix",
    "parse_tier_mix",
    "poisson_arrivals",
    "synthetic_lengths",
    "top_tier_mix",
    "workload_lengths",
]
