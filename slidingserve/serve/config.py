"""Typed configuration of the Ray Serve application.

One ``ServeAppConfig`` describes the whole application: the engine each replica hosts, the
SLO tier file, API keys, admission control, the router and the predictor link. It arrives as
the ``args`` of the application builder (``deploy/*.yaml``) or from ``slidingserve serve``,
and is validated on load; errors name the field and the bad value.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slidingserve.slo.tiers import BUILTIN_TIERS, resolve_tiers_path


class ServeConfigError(ValueError):
    """The serve configuration is invalid; the message names the field and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Strict):
    """What each engine replica runs. ``model: tiny`` builds the project's small CPU model."""

    model: str = Field(default="tiny", min_length=1)
    tokenizer: str | None = None
    served_model_name: str | None = None
    max_num_batched_tokens: int = Field(default=512, gt=0)
    max_num_seqs: int = Field(default=32, gt=0)
    max_model_len: int = Field(default=2048, gt=0)
    tensor_parallel_size: int = Field(default=1, gt=0)
    kv_cache_memory_bytes: int | None = Field(default=64 * 2**20, gt=0)  # None: vLLM's default
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    dtype: str | None = None  # None: float32 for the tiny CPU model, "auto" otherwise
    enforce_eager: bool = True
    # vLLM's automatic prefix caching (engine/README.md; measured in docs/engine.md)
    prefix_caching: bool = True
    executor: str | None = "uni"  # vLLM distributed_executor_backend; "uni" = no worker process
    scheduler: Literal["slidingserve", "vllm"] = "slidingserve"  # "vllm": vLLM's own (baseline)
    policy: str = "slidingserve"  # registered policy the SlidingServe scheduler runs
    policy_config: dict[str, Any] = Field(default_factory=dict)
    latency_check_every: int = Field(default=16, gt=0)  # engine steps between version checks
    step_trace_flush_every: int = Field(default=64, gt=0)  # engine steps between trace writes
    data_dir: str | None = None  # tiny-model cache and per-replica files (default: data dir)
    engine_metrics: bool = True  # export vLLM's engine stats as Ray metrics (serve.engine_stats)
    keep_replica_files: bool = False  # keep a replica's step trace + model dir after it stops
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.served_model_name or ("tiny" if self.model == "tiny" else self.model)


class AuthConfig(_Strict):
    """API keys and the tiers each may use. Keys come from config or an env var, never code.

    ``keys`` maps a key to its allowed tiers (``["*"]`` = all). ``keys_env`` names an env
    var holding ``key=tier1|tier2,key2=*``. With neither, every tier is open to everyone.
    """

    keys: dict[str, list[str]] = Field(default_factory=dict)
    keys_env: str | None = "SLIDINGSERVE_API_KEYS"

    def resolved_keys(self) -> dict[str, tuple[str, ...]]:
        table = {k: tuple(v) for k, v in self.keys.items()}
        raw = os.environ.get(self.keys_env, "") if self.keys_env else ""
        for i, item in enumerate(p for p in raw.split(",") if p.strip()):
            key, sep, tiers = item.strip().partition("=")
            if not sep or not key or not tiers:
                raise ServeConfigError(
                    f"env {self.keys_env}: entry #{i} is not 'key=tier1|tier2' "
                    f"(got an entry of {len(item)} characters; value not shown)"
                )
            table[key] = tuple(t.strip() for t in tiers.split("|") if t.strip())
        return table


class AdmissionConfig(_Strict):
    """Refuse (429) or downgrade a request whose predicted TTFT misses target x margin.

    Under overload the lowest tier gives first: a replica holds at most
    ``lowest_tier_share`` x ``max_ongoing_requests`` requests when it admits one of the
    lowest tier, proportionally more for the tiers above, and all of them for the top tier;
    beyond that it refuses the request with 429 and Retry-After. The top tier thus always
    finds a slot on the replica, never waits behind lower tiers in Ray Serve's queue, and
    overtakes them inside the engine (the policy's tier order).
    """

    enabled: bool = True
    margin: float = Field(default=1.0, gt=0)
    on_reject: Literal["reject", "downgrade"] = "reject"
    best_effort_tier: str | None = None  # None = the lowest-priority tier
    min_retry_after_s: int = Field(default=1, ge=1)
    lowest_tier_share: float = Field(default=0.5, gt=0, le=1)  # 1: no tier-aware shedding


class RouterConfig(_Strict):
    """The slack-aware request router and how often replicas report their stats."""

    enabled: bool = True
    stats_period_s: float = Field(default=0.5, gt=0)
    stale_after_s: float = Field(default=3.0, gt=0)


class PredictorLinkConfig(_Strict):
    """How replicas reach the central predictor actor."""

    enabled: bool = False
    actor_name: str | None = None  # None = the predictor's default name
    namespace: str | None = None
    poll_period_s: float = Field(default=1.0, gt=0)
    sample_batch: int = Field(default=64, gt=0)
    retrain_every_s: float | None = Field(default=60.0, gt=0)  # if this replica creates the actor


class ServeAppConfig(_Strict):
    """The whole application; the ``args`` of ``slidingserve.serve.app:build``."""

    tiers_path: str | None = None  # a file or a built-in name; None = "qoserve"
    engine: EngineConfig = Field(default_factory=EngineConfig)
    num_replicas: int = Field(default=1, gt=0)
    engine_num_cpus: float = Field(default=1.0, ge=0)
    engine_num_gpus: float = Field(default=0.0, ge=0)
    max_ongoing_requests: int = Field(default=64, gt=0)  # per engine replica
    ingress_replicas: int = Field(default=1, gt=0)
    ingress_max_ongoing_requests: int = Field(default=2048, gt=0)  # async: streams, not compute
    auth: AuthConfig = Field(default_factory=AuthConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    predictor: PredictorLinkConfig = Field(default_factory=PredictorLinkConfig)

    @field_validator("tiers_path")
    @classmethod
    def _tiers_exist(cls, v: str | None) -> str | None:
        if v is not None and not resolve_tiers_path(v).is_file():
            raise ValueError(f"tier file {v!r} does not exist (built-in tier sets: "
                             f"{', '.join(BUILTIN_TIERS)})")
        return v


def load_serve_config(data: dict[str, Any] | None, source: str = "<args>") -> ServeAppConfig:
    """Validate ``data``; the error names the field path and the bad value."""
    try:
        return ServeAppConfig.model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        shown = repr(err.get("input"))
        if loc.startswith("auth.keys"):  # never echo an API key
            loc, shown = "auth.keys", "<hidden>"
        raise ServeConfigError(f"{source}: field {loc}: {err['msg']} (got {shown})") from None
