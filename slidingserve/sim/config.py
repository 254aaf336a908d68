"""Simulator configuration (``SimConfig``, its step timing ``TimingConfig``) and the default
KV-cache size."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slidingserve.latency import RooflineConfig
from slidingserve.policy import HostLimits

GIB = 1024**3


def default_kv_blocks(
    model: RooflineConfig | None = None,
    block_size: int = 16,
    gpu_memory_bytes: float = 80 * GIB,
    memory_utilization: float = 0.9,
    reserve_bytes: float = 2 * GIB,
) -> int:
    """KV blocks an engine like vLLM gets for ``model`` on one 80 GB H100.

    (GPU memory x utilization - weights - activation reserve) / (KV bytes per token x block).
    For the default Llama-3-8B-class model: (72 GiB - 16 GB - 2 GiB) / 128 KiB per token,
    about 440k tokens, 27.5k blocks of 16.
    """
    m = model or RooflineConfig()
    kv_bytes_per_token = 2 * m.num_layers * m.num_kv_heads * m.head_dim * m.bytes_per_param
    free = gpu_memory_bytes * memory_utilization - m.num_params * m.bytes_per_param - reserve_bytes
    if free <= 0:
        raise ValueError(
            f"model weights ({m.num_params * m.bytes_per_param:.3g} B) leave no KV memory"
        )
    return int(free // (kv_bytes_per_token * block_size))


class TimingConfig(BaseModel):
    """How long a simulated step takes: the simulator's clock, apart from the policy's
    planning model (see ``slidingserve/sim/timing.py``).

    ``kind``: ``oracle`` times each step with the policy's own latency model (the default:
    prediction error never hurts); ``noise`` multiplies that prediction by exp(sigma z), z
    standard normal (lognormal, median 1), ``noise_sigma`` fitted to measured repeats of one
    step shape when None (``timing.fit_noise``); with ``noise_rho`` > 0 the z of consecutive
    steps are correlated (a stationary AR(1) process, lag-1 correlation ``noise_rho``, still
    standard normal per step): slow steps come in runs, as on a shared machine; ``replay``
    looks measured step times up by shape in the step trace ``replay``
    (``timing.ReplayTable``). ``scale`` multiplies every kind's execution time (a machine
    measured ``scale`` x slower than the planning model says); ``prefill_scale``, when set,
    replaces it for steps that run prefill tokens (a model whose error differs between
    decode-only steps and steps with a prefill chunk). Every kind adds the policy's
    planning time to each step: ``plan_s_by_policy[policy name]``, else ``plan_s``; with
    ``plan_s_by_held`` (``(requests, seconds)`` pairs, requests ascending from 0), the planning
    time of a step is instead the seconds of the last pair whose requests are at most the
    requests the replica holds (running and waiting) when it plans the step: a planner's cost
    grows with its queue (measured: 0.15 ms with up to 5 requests, 1.7 ms with 40 or more).
    Random draws follow ``seed`` per replica and step number, never the wall clock.
    With ``planner_correction`` > 0 the planner corrects its model online from the steps it
    sees, as the engine adapter does (``engine.latency_source.LiveLatencyModel``): each
    replica's policy plans with its own copy of the model, scaled by the moving average of
    log(step time / its prediction), while the clock keeps timing steps with the model as
    given; slow steps in a run (``noise_rho``) then inflate the planner's predictions for the
    steps after them, as on the engine. With ``spell_rate_hz`` > 0 the machine has slow spells
    (``timing.SlowSpells``): Poisson in time, of exponential length ``spell_s`` on average,
    execution time x ``spell_x`` while one lasts, the same times for every policy of a seed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["oracle", "noise", "replay"] = "oracle"
    seed: int = Field(default=0, ge=0)
    noise_sigma: float | None = Field(default=None, ge=0, le=5)  # None: fitted (kind noise)
    noise_rho: float = Field(default=0.0, ge=0, lt=1)  # lag-1 correlation of the noise
    scale: float = Field(default=1.0, gt=0, le=100)  # execution time x this
    # steps with prefill tokens: execution time x this instead (None: ``scale``)
    prefill_scale: float | None = Field(default=None, gt=0, le=100)
    replay: Path | None = None  # step trace (.csv/.parquet) of measured steps (kind replay)
    plan_s: float = Field(default=0.0, ge=0, le=10)  # planning time per step, every policy
    # Registered policy name -> planning time per step (s); overrides ``plan_s``.
    plan_s_by_policy: dict[str, float] = Field(default_factory=dict)
    # (requests held, planning time per step) steps, every policy; overrides both above.
    plan_s_by_held: tuple[tuple[int, float], ...] = ()
    # The planner's online correction, as the engine adapter runs it: the decay of its moving
    # average of log(step time / prediction) (the engine's ``latency_correction_decay``); 0:
    # the planner's model stays as given.
    planner_correction: float = Field(default=0.0, ge=0, lt=1)
    # Slow spells (``timing.SlowSpells``): spells per second (0: none), their mean length (s)
    # and the factor on execution time while one lasts.
    spell_rate_hz: float = Field(default=0.0, ge=0, le=100)
    spell_s: float = Field(default=0.5, gt=0, le=600)
    spell_x: float = Field(default=2.5, ge=1, le=100)

    @field_validator("plan_s_by_policy")
    @classmethod
    def _check_plan_times(cls, value: dict[str, float]) -> dict[str, float]:
        for name, s in value.items():
            if not (math.isfinite(s) and 0 <= s <= 10):
                raise ValueError(f"planning time of {name!r} must be 0-10 s (got {s!r})")
        return value

    @field_validator("plan_s_by_held")
    @classmethod
    def _check_plan_table(cls, value: tuple[tuple[int, float], ...]
                          ) -> tuple[tuple[int, float], ...]:
        held = [n for n, _ in value]
        if value and (held[0] != 0 or any(b <= a for a, b in itertools.pairwise(held))):
            raise ValueError(f"plan_s_by_held must start at 0 requests and rise (got {held})")
        for n, sec in value:
            if not (math.isfinite(sec) and 0 <= sec <= 10):
                raise ValueError(f"planning time at {n} requests must be 0-10 s (got {sec!r})")
        return value

    @model_validator(mode="after")
    def _check(self) -> TimingConfig:
        if self.kind == "replay" and self.replay is None:
            raise ValueError("timing kind 'replay' needs a step trace (field replay)")
        if self.kind != "replay" and self.replay is not None:
            raise ValueError(
                f"field replay is set ({self.replay}) but timing kind is {self.kind!r}"
            )
        if self.kind != "noise" and self.noise_sigma is not None:
            raise ValueError(
                f"field noise_sigma is set ({self.noise_sigma}) but timing kind is {self.kind!r}"
            )
        if self.kind != "noise" and self.noise_rho:
            raise ValueError(
                f"field noise_rho is set ({self.noise_rho}) but timing kind is {self.kind!r}"
            )
        return self

    def plan_time_s(self, policy: str) -> float:
        """Planning time added to each step of the registered policy ``policy`` (without
        ``plan_s_by_held``; with it, the largest of its times)."""
        if self.plan_s_by_held:
            return max(sec for _, sec in self.plan_s_by_held)
        return self.plan_s_by_policy.get(policy, self.plan_s)

    def label(self, policy: str | None = None) -> str:
        """Short description for tables and summaries, e.g. ``noise(sigma=0.318) +plan 1.8ms``
        (with ``policy``: that policy's planning time only)."""
        if self.kind == "noise":
            sigma = "fitted" if self.noise_sigma is None else f"{self.noise_sigma:.3g}"
            rho = f", rho={self.noise_rho:.3g}" if self.noise_rho else ""
            text = f"noise(sigma={sigma}{rho})"
        elif self.kind == "replay":
            text = f"replay({self.replay.name if self.replay else ''})"
        else:
            text = "oracle"
        if self.scale != 1.0 or self.prefill_scale is not None:
            text += f" x{self.scale:.3g}"
        if self.prefill_scale is not None:
            text += f" (prefill x{self.prefill_scale:.3g})"
        if self.spell_rate_hz:
            text += (f" spells({self.spell_rate_hz:.3g}/s of {self.spell_s:.3g}s"
                     f" x{self.spell_x:.3g})")
        if self.planner_correction:
            text += f" planner-corrected({self.planner_correction:g})"
        if policy is not None:
            plans = [("", self.plan_time_s(policy))]
        else:
            plans = [("", self.plan_s), *sorted(self.plan_s_by_policy.items())]
        if self.plan_s_by_held:
            low, high = self.plan_s_by_held[0][1], max(v for _, v in self.plan_s_by_held)
            return text + f" +plan {low * 1e3:.3g}-{high * 1e3:.3g}ms by queue"
        if any(v > 0 for _, v in plans):
            text += " +plan " + ", ".join(
                f"{name} {v * 1e3:.3g}ms".strip() for name, v in plans if v > 0 or name
            )
        return text


class SimConfig(BaseModel):
    """One simulated deployment: replicas, router, fleet, engine limits, KV cache, run controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    replicas: int = Field(default=1, ge=1)
    router: str = "round-robin"  # a registered router (slidingserve/sim/routers.py)
    router_seed: int = Field(default=0, ge=0)  # random routers (pow2) draw from this seed
    # homogeneous: one latency model for all; heterogeneous: the odd-indexed half of the
    # replicas run slow_factor x slower, each planning and timed with its own model (fleet.py).
    fleet: Literal["homogeneous", "heterogeneous"] = "homogeneous"
    slow_factor: float = Field(default=2.0, ge=1.0, le=100.0)
    # Replica ``fail_replica`` dies at this simulated time (None: no failure): it is routed
    # nothing more, its requests without a computed token are routed again to the others,
    # the ones that started are lost (violations). See slidingserve/sim/simulator.py.
    fail_replica_at_s: float | None = Field(default=None, ge=0)
    fail_replica: int = Field(default=0, ge=0)
    block_size: int = Field(default=16, ge=1)
    num_blocks: int | None = Field(default=None, ge=1)  # None: default_kv_blocks()
    max_num_seqs: int = Field(default=256, ge=1)
    max_batch_tokens: int = Field(default=16384, ge=1)
    max_model_len: int = Field(default=32768, ge=1)
    # Collapse runs of identical decode-only steps (see slidingserve/sim/fastforward.py).
    fast_forward: bool = True
    fast_forward_max_steps: int = Field(default=4096, ge=1)
    # Run decode-only steps without calling a policy that declares their plan fixed
    # (``Policy.fixed_decode_steps``; see slidingserve/sim/fastforward.py).
    skip_fixed_plans: bool = True
    record_token_times: bool = False  # keep every token's time in the records (memory heavy)
    # Also measure the CPU time inside the policy (``stats["policy_cpu_s"]``; costs a CPU-clock
    # read per policy call, slow on a busy virtual machine).
    measure_policy_cpu: bool = False
    # Stop at (last arrival + drain_s); requests unfinished then count as violations.
    # None: run until every request finishes.
    drain_s: float | None = Field(default=None, ge=0)
    # The simulator's clock: how long each step takes (default: the policy's latency model).
    timing: TimingConfig = TimingConfig()

    @model_validator(mode="after")
    def _check_failure(self) -> SimConfig:
        if self.fail_replica >= self.replicas:
            raise ValueError(
                f"fail_replica {self.fail_replica} is not a replica (replicas={self.replicas})"
            )
        if self.fail_replica_at_s is not None and self.replicas < 2:
            raise ValueError(
                f"fail_replica_at_s={self.fail_replica_at_s} needs at least 2 replicas "
                f"(replicas={self.replicas}): the failed one's requests need somewhere to go"
            )
        return self

    def kv_blocks(self) -> int:
        return (
            self.num_blocks
            if self.num_blocks is not None
            else default_kv_blocks(block_size=self.block_size)
        )

    def limits(self) -> HostLimits:
        return HostLimits(self.max_num_seqs, self.max_batch_tokens, self.max_model_len)
