"""Workload configs and the one function that turns a config into request specs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidingserve.slo import TierSet
from slidingserve.workload.arrivals import gamma_arrivals
from slidingserve.workload.spec import RequestSpec
from slidingserve.workload.synthetic import synthetic_lengths
from slidingserve.workload.tiermix import assign_tiers, normalise_mix
from slidingserve.workload.trace import Trace, load_trace

ArrivalKind = Literal["poisson", "gamma", "replay"]


class WorkloadConfig(BaseModel):
    """How to build a workload.

    ``poisson``/``gamma``: ``num_requests`` arrivals at ``rate`` (Gamma gaps with CV ``cv``),
    each with a (prompt, output) pair drawn jointly, with replacement, from the trace (or the
    built-in synthetic distribution when ``trace`` is None). ``replay``: the trace's own
    arrivals (the first ``num_requests`` rows, or all), times multiplied by ``time_scale``, or
    rescaled to mean ``rate`` when a rate is given. Tiers are drawn from ``tier_mix`` (default:
    the tier file's shares). Same config and seed, same workload.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    trace: Path | None = None
    arrival: ArrivalKind = "poisson"
    rate: float | None = Field(default=None, gt=0)
    cv: float = Field(default=1.0, gt=0)
    num_requests: int | None = Field(default=None, ge=1)
    time_scale: float = Field(default=1.0, gt=0)
    tier_mix: dict[str, float] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> WorkloadConfig:
        if self.arrival in ("poisson", "gamma"):
            if self.rate is None:
                raise ValueError(f"arrival {self.arrival!r} needs a rate (got rate=None)")
            if self.num_requests is None:
                raise ValueError(f"arrival {self.arrival!r} needs num_requests (got None)")
        if self.arrival == "replay" and self.trace is None:
            raise ValueError("arrival 'replay' needs a trace (got trace=None)")
        return self


def build_workload(
    config: WorkloadConfig, tiers: TierSet, trace: Trace | None = None
) -> list[RequestSpec]:
    """Request specs sorted by arrival. Pass ``trace`` to reuse one already loaded."""
    rng = np.random.default_rng(config.seed)
    if trace is None and config.trace is not None:
        trace = load_trace(config.trace)
    if config.arrival == "replay":
        assert trace is not None
        if trace.arrival_s is None:
            raise ValueError(
                f"trace {trace.source} has no timestamps (lengths-only format): it cannot be "
                "replayed; use Poisson or Gamma arrivals with a rate"
            )
        n = min(config.num_requests or len(trace), len(trace))
        arrivals = trace.arrival_s[:n] * config.time_scale
        if config.rate is not None and n > 1 and arrivals[-1] > 0:
            arrivals = arrivals * ((n - 1) / arrivals[-1]) / config.rate
        prompts, outputs = trace.prompt_len[:n], trace.output_len[:n]
    else:
        assert config.rate is not None and config.num_requests is not None
        n = config.num_requests
        arrivals = gamma_arrivals(
            config.rate, config.cv if config.arrival == "gamma" else 1.0, n, rng
        )
        if trace is not None:
            rows = rng.integers(0, len(trace), size=n)
            prompts, outputs = trace.prompt_len[rows], trace.output_len[rows]
        else:
            prompts, outputs = synthetic_lengths(n, rng)
    mix = normalise_mix(config.tier_mix, tiers) if config.tier_mix is not None else tiers.mix()
    names = assign_tiers(n, mix, rng)
    return [
        RequestSpec(key=i, arrival_s=float(a), prompt_len=int(p), output_len=int(o), tier=t)
        for i, (a, p, o, t) in enumerate(zip(arrivals, prompts, outputs, names, strict=True))
    ]
