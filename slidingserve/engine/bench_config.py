"""The engine benchmark's configuration: tiers as multiples of the engine's unloaded latency
(``TierScale``, ``Calibration``), the validated ``BenchConfig``, and the workload a trial sends
(``scaled_workload``: the trace's lengths scaled to the tiny model's context)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidingserve.engine.sim_timing import PER_TRIAL
from slidingserve.latency.named import SHIPPED_MODEL_DIRS
from slidingserve.slo.tiers import TierSet, tiers_from_dict
from slidingserve.workload import WorkloadConfig, build_workload, load_trace
from slidingserve.workload.spec import RequestSpec

VLLM_OWN = {"vllm-default": "fcfs", "vllm-priority": "priority"}
SIM_POLICY = {"vllm-default": "vllm-fcfs", "vllm-priority": "vllm-priority"}  # their sim twins
KV_BYTES_PER_TOKEN = 2 * 4 * 4 * 64 * 4  # tiny Llama: K and V x 4 layers x 4 heads x 64 x fp32
CPU_BLOCK_SIZE = 128  # vLLM-CPU's KV block size
DEFAULT_LATENCY_MODEL = SHIPPED_MODEL_DIRS["cpu-tiny"]


class TierScale(BaseModel):
    """A tier's targets as multiples of the unloaded latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ttft_x: float = Field(gt=0)  # x unloaded TTFT of the median prompt
    tpot_x: float = Field(gt=0)  # x unloaded single-request decode step
    weight: float = Field(default=1.0, gt=0)
    share: float = Field(default=0.0, ge=0)
    # 0 = most important. None: the default tier of the same name's, else the tier's place in
    # the mapping (a mapping read back from JSON written with sorted keys has lost that order)
    priority: int | None = Field(default=None, ge=0)


# Interactive TTFT is 8x the median prompt's: the longest prompt (1024 tokens, ~4x the median)
# must be able to meet it on an unloaded engine, or no scheduler could keep that tier within
# SLO at any load (at 4x, ~5% of interactive requests were infeasible before any queueing).
DEFAULT_SCALES = {
    "interactive": TierScale(ttft_x=8.0, tpot_x=4.0, weight=4.0, share=0.2, priority=0),
    "standard": TierScale(ttft_x=15.0, tpot_x=8.0, weight=2.0, share=0.5, priority=1),
    "batch": TierScale(ttft_x=60.0, tpot_x=15.0, weight=1.0, share=0.3, priority=2),
}


def ranked_scales(scales: dict[str, TierScale]) -> list[tuple[str, TierScale]]:
    """The tiers most important first (``TierScale.priority``): the order fixes priorities and
    the workload's tier draws, so it must not depend on how the mapping was stored."""
    def rank(item: tuple[int, tuple[str, TierScale]]) -> tuple[int, int]:
        i, (name, s) = item
        default = DEFAULT_SCALES.get(name)
        p = s.priority if s.priority is not None else \
            default.priority if default is not None and default.priority is not None else i
        return p, i
    return [item for _, item in sorted(enumerate(scales.items()), key=rank)]


class BenchConfig(BaseModel):
    """One engine benchmark; every field is validated, errors name field and value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trace: Path | None = None  # Azure-format CSV; None: the built-in synthetic lengths
    duration_s: float = Field(default=60.0, gt=0)
    drain_s: float = Field(default=60.0, ge=0)
    seed: int = 0  # the engine's seed, and the workload's unless ``workload_seeds`` is set
    # Every trial runs one workload per seed and pools their requests: one 30 s trial holds
    # too few requests to tell schedulers apart (README); () means (seed,). In a sweep the
    # schedulers' workloads take turns (``bench.find_capacity``).
    workload_seeds: tuple[int, ...] = ()
    prompt_scale: float = Field(default=0.25, gt=0)  # trace prompt lengths x this
    output_scale: float = Field(default=0.25, gt=0)  # trace output lengths x this
    max_prompt: int = Field(default=1024, gt=0)
    max_output: int = Field(default=128, gt=0)
    max_model_len: int = Field(default=2048, gt=0)
    max_num_seqs: int = Field(default=32, gt=0)
    max_num_batched_tokens: int = Field(default=512, gt=0)
    kv_cache_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    latency_model: Path | None = None  # in-engine latency model dir (None: the CPU predictor)
    scales: dict[str, TierScale] = Field(default_factory=lambda: dict(DEFAULT_SCALES))
    # Named variants of our policies: label -> (registered policy, its config overrides); a
    # scheduler named by such a label runs that policy through the adapter (and the simulator).
    variants: dict[str, tuple[str, dict[str, Any]]] = Field(default_factory=dict)
    # The simulator's step timing in its predictions (sim_timing.py): "measured" = this run's
    # step-time noise plus each trial's planning time per step (``sim_plan_time`` column);
    # "measured-trial" = each trial's own step-time ratio, noise and its correlation, plus
    # its planning time; "measured-workload" = the same for each workload of a trial apart.
    sim_timing: Literal["oracle", "measured", "measured-trial", "measured-workload"] = \
        "measured-workload"
    sim_plan_time: Literal["sched", "plan", "plan-cpu", "none", "cycle"] = "sched"
    # with noisy timing, each prediction is the mean over this many draws of the noise
    sim_noise_draws: int = Field(default=4, ge=1, le=64)
    # With noisy timing, the simulated planner corrects its model online as the adapter does
    # (``TimingConfig.planner_correction``; the adapter's ``latency_correction_decay``); 0:
    # it plans with the median correction measured while serving, fixed.
    sim_planner_correction: float = Field(default=0.95, ge=0, lt=1)
    # With per-trial timing, the slow spells found in each trial's steps are simulated as
    # spells (``sim_timing.spell_fit``), the rest as noise; False: all of it as noise.
    sim_spells: bool = True
    # arrivals per rate tried for the engine's throughput limit (``predict.throughput_limit``)
    limit_requests: int = Field(default=2000, ge=50)

    @model_validator(mode="after")
    def _check_cycle(self) -> BenchConfig:
        if self.sim_plan_time == "cycle" and self.sim_timing not in PER_TRIAL:
            raise ValueError("sim_plan_time 'cycle' is measured per trial: it needs "
                             "sim_timing 'measured-trial' or 'measured-workload' (got "
                             f"{self.sim_timing!r})")
        return self

    def trial_seeds(self) -> tuple[int, ...]:
        """The workload seeds every trial runs (their requests are pooled)."""
        return self.workload_seeds or (self.seed,)

    def policy_of(self, scheduler: str) -> tuple[str, dict[str, Any]]:
        """The registered policy and config overrides a (non-vLLM) scheduler name stands for."""
        return self.variants.get(scheduler, (scheduler, {}))


@dataclass(frozen=True)
class Calibration:
    """Unloaded latency of the engine: what the SLOs are multiples of."""

    ttft_s: float  # single-request TTFT of a median-length prompt
    decode_step_s: float  # single-request decode step
    prompt_len: int  # the median prompt it was measured with

    @classmethod
    def placeholder(cls) -> Calibration:
        """Unit latencies: the engine's tier set (names, weights, priorities) before calibration."""
        return cls(1.0, 1.0, 0)

    def tiers(self, scales: dict[str, TierScale]) -> TierSet:
        ranked = ranked_scales(scales)
        return tiers_from_dict({
            "default_tier": ranked[0][0],
            "tiers": [
                {"name": name, "ttft_s": s.ttft_x * self.ttft_s,
                 "tpot_s": s.tpot_x * self.decode_step_s, "weight": s.weight,
                 "priority": i, "share": s.share}
                for i, (name, s) in enumerate(ranked)
            ],
        }, source="bench calibration")


def scaled_workload(cfg: BenchConfig, rate: float, tiers: TierSet, seed: int) -> list[RequestSpec]:
    """Poisson arrivals at ``rate`` for ``duration_s``; lengths scaled to the small model."""
    n = max(1, round(rate * cfg.duration_s))
    trace = load_trace(cfg.trace) if cfg.trace is not None else None
    specs = build_workload(
        WorkloadConfig(trace=cfg.trace, arrival="poisson", rate=rate, num_requests=n, seed=seed),
        tiers, trace,
    )
    out = []
    for s in specs:
        p = int(np.clip(round(s.prompt_len * cfg.prompt_scale), 4, cfg.max_prompt))
        o = int(np.clip(round(s.output_len * cfg.output_scale), 2, cfg.max_output))
        p = min(p, cfg.max_model_len - o - 1)
        out.append(RequestSpec(key=s.key, arrival_s=s.arrival_s, prompt_len=p, output_len=o,
                               tier=s.tier))
    return out
