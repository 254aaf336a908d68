"""Typed configuration of the Ray Serve application.

One ``ServeAppConfig`` describes the whole application: the engine each replica hosts, the
SLO tier file, API keys, admission control, the router and the predictor link. It arrives as
the ``args`` of the application builder (``deploy/*.yaml``) or from ``slidingserve serve``,
and is validated on load; errors name the field and the bad value.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from slidingserve.latency.roofline import RooflineConfig
from slidingserve.slo.tiers import BUILTIN_TIERS, resolve_tiers_path

RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


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
    # vLLM distributed_executor_backend; "uni" = no worker process on a GPU (vLLM's CPU
    # platform always runs the model in a worker process: it turns "uni" into "mp")
    executor: str | None = "uni"
    scheduler: Literal["slidingserve", "vllm"] = "slidingserve"  # "vllm": vLLM's own (baseline)
    policy: str = "slidingserve"  # registered policy the SlidingServe scheduler runs
    policy_config: dict[str, Any] = Field(default_factory=dict)
    latency_check_every: int = Field(default=16, gt=0)  # engine steps between version checks
    step_trace_flush_every: int = Field(default=64, gt=0)  # engine steps between trace writes
    data_dir: str | None = None  # tiny-model cache and per-replica files (default: data dir)
    engine_metrics: bool = True  # export vLLM's engine stats as Ray metrics (serve.engine_stats)
    keep_replica_files: bool = False  # keep a replica's step trace + model dir after it stops
    # the cold-start latency model: a replica plans with this roofline until the predictor
    # publishes a model measured on it (defaults: Llama-3-8B on one H100 SXM) ...
    roofline: RooflineConfig = Field(default_factory=RooflineConfig)
    # ... or, when set, with this predictor model (a `predictor.train` output directory, or
    # "cpu-tiny": the shipped model of the tiny model's CPU steps)
    cold_start_model: str | None = Field(default=None, min_length=1)
    # provenance of the replica's step trace and of the predictor models it accepts
    # (None: the accelerator's name, else machine-cpus; see slidingserve.engine.steps)
    hardware: str | None = Field(default=None, min_length=1)
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)
    # oneDNN's primitive cache in the engine's processes (ONEDNN_PRIMITIVE_CACHE_CAPACITY; an
    # environment variable already set wins; None: oneDNN's default, 1,024). CPU engines build
    # one primitive per step shape, and SlidingServe's chunks vary the shapes: at the default
    # the vLLM worker grew ~15% in a 12-minute soak, flat at 8 (docs/reliability.md).
    onednn_primitive_cache: int | None = Field(default=8, gt=0)
    # vLLM's VLLM_CPU_OMP_THREADS_BIND for CPU engines (an environment variable already set
    # wins; None: vLLM's default, "auto"). "auto" binds each engine's threads to the host's
    # cores less one it reserves, the same cores for every replica on the host: on 2 cores both
    # replicas of the embedded default ran on core 0. "nobind" lets the OS place them
    # (docs/reliability.md). GPU engines ignore it.
    cpu_threads_bind: str | None = Field(default="nobind", min_length=1)

    @property
    def name(self) -> str:
        return self.served_model_name or ("tiny" if self.model == "tiny" else self.model)

    @model_validator(mode="after")
    def _policy_config_valid(self) -> EngineConfig:
        # refused here, naming the field, rather than in the engine's process at start-up
        if self.scheduler == "slidingserve":
            from slidingserve.policy import policy_config

            policy_config(self.policy, **self.policy_config)
        return self


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
    beyond that it refuses the request with 429 and Retry-After. The top tier may also take
    ``top_tier_reserve`` slots beyond ``max_ongoing_requests`` (Ray Serve's limit per engine
    replica is their sum), so it finds a slot on the replica however many lower-tier requests
    the engine holds, never waits behind them in Ray Serve's queue, and overtakes them inside
    the engine (the policy's tier order); its own excess is refused by its predicted TTFT.
    """

    enabled: bool = True
    margin: float = Field(default=1.0, gt=0)
    on_reject: Literal["reject", "downgrade"] = "reject"
    best_effort_tier: str | None = None  # None = the lowest-priority tier
    min_retry_after_s: int = Field(default=1, ge=1)
    lowest_tier_share: float = Field(default=0.5, gt=0, le=1)  # 1: no tier-aware shedding
    # slots per engine replica only the top tier may take, beyond ``max_ongoing_requests``:
    # under 4x overload an engine held 63 of 64 requests (lower tiers waiting within their
    # long deadlines), and top-tier requests queued 2-5 s in Ray Serve before the replica saw
    # them (docs/reliability.md). 0: the top tier shares ``max_ongoing_requests``.
    top_tier_reserve: int = Field(default=64, ge=0)
    # scale each tier's predicted TTFT by the replica's measured / predicted ratio (load.py)
    learn_ttft_error: bool = True
    # Refuse a request while a request of a higher tier on this replica has waited for its
    # first token longer than this share of its tier's TTFT target, and longer than
    # ``yield_min_wait_s``: the replica is falling behind on a more important tier, and more
    # lower-tier work (it decodes in every step and holds KV) would slow it further. The floor
    # keeps tight targets (the CPU tiers' 336 ms) from refusing lower tiers over the wait of
    # one busy step. None: no such rule.
    yield_to_late_tier: float | None = Field(default=0.25, gt=0, le=1)
    yield_min_wait_s: float = Field(default=1.0, ge=0)
    # After the replica the router ranked first refuses a whole tier (full for it, or behind
    # on a higher tier), the ingress refuses that tier itself for this long, without a call
    # to a replica (serve/tier_gate.py). None: every request goes to a replica.
    ingress_hold_s: float | None = Field(default=0.5, gt=0)
    # True: the ingress's 429 for a held tier says how long it is held (``x-slo-tier-hold-ms``),
    # and the HTTP proxy answers that tier's next requests itself, bodies unread
    # (``ProxyTierGate``, serve/proxy_tier_gate.py): ~1.1 ms of cluster CPU per refusal
    # against ~10.6 at the ingress, but at 4x overload no better for the top tier, and with a
    # longer tail (docs/reliability.md), so off by default.
    hold_at_proxy: bool = False


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
    # if this replica creates the actor: it publishes only models fitted on a prefill of at
    # least this share of ``engine.max_num_batched_tokens`` (a model that has seen short
    # prompts only would plan long chunks with an extrapolation; predictor/service.py)
    min_prefill_coverage: float = Field(default=0.5, ge=0, le=1)


PlacementStrategy = Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"]


class PlacementConfig(_Strict):
    """Where replicas run on a multi-node Ray cluster.

    ``engine_resources`` / ``ingress_resources``: Ray custom resources each replica needs
    (a node offers them with ``ray start --resources='{"engine": 1}'``), e.g. to keep engine
    replicas on accelerator nodes and the ingress on the head node. CPUs and GPUs are set by
    ``engine_num_cpus`` / ``engine_num_gpus``, not here. ``max_engine_replicas_per_node``:
    Ray Serve's ``max_replicas_per_node`` for the engine (1 = one replica per node).
    """

    engine_resources: dict[str, float] = Field(default_factory=dict)
    ingress_resources: dict[str, float] = Field(default_factory=dict)
    max_engine_replicas_per_node: int | None = Field(default=None, gt=0)

    @field_validator("engine_resources", "ingress_resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name.strip() or name in RESERVED_RESOURCES:
                raise ValueError(f"resource name {name!r} is not a custom resource (CPU, GPU "
                                 f"and memory have their own fields)")
            if not amount > 0:
                raise ValueError(f"resource {name!r} needs an amount > 0 (got {amount!r})")
        return v


class ServeAppConfig(_Strict):
    """The whole application; the ``args`` of ``slidingserve.serve.app:build``.

    Engine replicas: a fixed ``num_replicas``, or ``autoscaling_config`` (Ray Serve's
    ``AutoscalingConfig`` fields, validated by Ray's own model), not both. With
    ``engine.tensor_parallel_size`` > 1 each replica reserves one GPU per rank in a placement
    group (``engine_placement_strategy``; the default keeps the ranks on one node), so
    ``engine_num_gpus`` must equal it.
    """

    tiers_path: str | None = None  # a file or a built-in name; None = "qoserve"
    engine: EngineConfig = Field(default_factory=EngineConfig)
    num_replicas: int = Field(default=1, gt=0)
    autoscaling_config: dict[str, Any] | None = None  # ray.serve.config.AutoscalingConfig
    engine_num_cpus: float = Field(default=1.0, ge=0)
    engine_num_gpus: float = Field(default=0.0, ge=0)
    engine_placement_strategy: PlacementStrategy = "STRICT_PACK"  # tensor-parallel replicas
    # per engine replica, for every tier (the top tier also has ``admission.top_tier_reserve``)
    max_ongoing_requests: int = Field(default=64, gt=0)
    ingress_replicas: int = Field(default=1, gt=0)
    ingress_max_ongoing_requests: int = Field(default=2048, gt=0)  # async: streams, not compute
    auth: AuthConfig = Field(default_factory=AuthConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    predictor: PredictorLinkConfig = Field(default_factory=PredictorLinkConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)

    @field_validator("autoscaling_config")
    @classmethod
    def _ray_autoscaling(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return None
        from ray.serve.config import AutoscalingConfig

        unknown = sorted(set(v) - set(AutoscalingConfig.model_fields))
        if unknown:  # Ray's model ignores unknown keys: a misspelt bound would go unnoticed
            raise ValueError(f"unknown field(s) {unknown} (Ray Serve's AutoscalingConfig has "
                             f"{', '.join(AutoscalingConfig.model_fields)})")
        try:
            AutoscalingConfig(**v)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = _message(err["msg"])
            raise ValueError(f"{where + ': ' if where else ''}{msg} "
                             "(Ray Serve's AutoscalingConfig)") from None
        return v

    @model_validator(mode="after")
    def _replicas_and_gpus_agree(self) -> ServeAppConfig:
        if self.autoscaling_config is not None and "num_replicas" in self.model_fields_set:
            raise ValueError(
                f"num_replicas={self.num_replicas} and autoscaling_config are both set: give "
                "one (autoscaling_config's min_replicas / max_replicas bound the replicas)"
            )
        tp, gpus = self.engine.tensor_parallel_size, self.engine_num_gpus
        if tp > 1 and self.placement.max_engine_replicas_per_node is not None:
            raise ValueError(
                f"placement.max_engine_replicas_per_node="
                f"{self.placement.max_engine_replicas_per_node} cannot be used with "
                f"engine.tensor_parallel_size={tp}: Ray Serve does not allow it with placement "
                "groups (use engine_placement_strategy: STRICT_SPREAD to spread replicas)"
            )
        if tp > 1 and gpus < tp:
            raise ValueError(
                f"engine_num_gpus={gpus:g} per replica does not cover "
                f"engine.tensor_parallel_size={tp}: each tensor-parallel rank needs its own GPU "
                f"(set engine_num_gpus: {tp})"
            )
        if tp > 1 and gpus != tp:
            raise ValueError(
                f"engine_num_gpus={gpus:g} per replica, but engine.tensor_parallel_size={tp} "
                f"uses {tp}: the rest would be reserved and idle (set engine_num_gpus: {tp})"
            )
        return self

    @model_validator(mode="after")
    def _cold_start_model_exists(self) -> ServeAppConfig:
        if self.engine.cold_start_model is not None:
            from slidingserve.engine.latency_source import resolve_model_dir

            resolve_model_dir(self.engine.cold_start_model)
        return self

    @property
    def engine_max_ongoing(self) -> int:
        """Ray Serve's ``max_ongoing_requests`` per engine replica: every tier's slots, plus the
        top tier's reserve while admission decides who takes them."""
        reserve = self.admission.top_tier_reserve if self.admission.enabled else 0
        return self.max_ongoing_requests + reserve

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
        loc = ".".join(str(p) for p in err["loc"])
        if not loc:  # a check across fields: its message names them (the input is all of it)
            raise ServeConfigError(f"{source}: {_message(err['msg'])}") from None
        shown = repr(err.get("input"))
        if loc.startswith("auth.keys"):  # never echo an API key
            loc, shown = "auth.keys", "<hidden>"
        raise ServeConfigError(
            f"{source}: field {loc}: {_message(err['msg'])} (got {shown})"
        ) from None


def _message(msg: str) -> str:
    """Pydantic's message without the ``Value error, `` it puts before a validator's own."""
    while msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    return msg
