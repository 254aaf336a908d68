"""What the SlidingServe scheduler reads from vLLM's config.

vLLM hands the scheduler its ``VllmConfig``; ``vllm_config.additional_config`` is a free-form
dict that vLLM carries unchanged into the EngineCore process. The adapter reads one key of it:

    EngineArgs(..., scheduler_cls=SCHEDULER_CLS,
               additional_config={"slidingserve": {"policy": "slidingserve", ...}})

Every field is validated on load; errors name the field and the bad value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slidingserve.slo.tiers import TierSet, load_tiers, tiers_from_dict

_C = TypeVar("_C", bound=BaseModel)

CONFIG_KEY = "slidingserve"
SCHEDULER_CLS = "slidingserve.engine.scheduler.SlidingServeScheduler"
# vLLM's own scheduler, decisions untouched, writing a step trace (``traced.py``)
TRACED_SCHEDULER_CLS = "slidingserve.engine.traced.TracedScheduler"


class EngineSchedulerConfig(BaseModel):
    """The adapter's configuration (``additional_config["slidingserve"]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(default="slidingserve", min_length=1)  # registered policy name
    policy_config: dict[str, Any] = Field(default_factory=dict)  # overrides of its config
    tiers_path: str | None = None  # tier file (None: deploy/slo_tiers.yaml)
    tiers: dict[str, Any] | None = None  # inline tier file contents (wins over tiers_path)
    latency_model: str | None = None  # latency-model dir (None: a RooflineModel)
    roofline: dict[str, Any] = Field(default_factory=dict)  # RooflineConfig overrides
    latency_check_every: int = Field(default=16, gt=0)  # steps between model-version checks
    # EMA decay of the online correction measured/predicted step time (0: off; see
    # latency_source.LiveLatencyModel.observe)
    latency_correction_decay: float = Field(default=0.95, ge=0, lt=1)
    step_trace: str | None = None  # .csv/.parquet path the measured steps are written to
    step_trace_flush_every: int = Field(default=512, gt=0)  # steps between (atomic) rewrites
    step_trace_keep: int = Field(default=50_000, gt=0)  # most recent steps kept in the trace
    model_name: str = "unknown"  # provenance of the step trace
    hardware: str | None = None  # provenance (None: machine-cpus)

    @model_validator(mode="after")
    def _policy_config_valid(self) -> EngineSchedulerConfig:
        from slidingserve.policy import policy_config

        policy_config(self.policy, **self.policy_config)
        return self

    def load_tiers(self) -> TierSet:
        if self.tiers is not None:
            return tiers_from_dict(self.tiers, source=f"additional_config.{CONFIG_KEY}.tiers")
        return load_tiers(self.tiers_path)


def config_from_additional(additional: dict[str, Any] | None) -> EngineSchedulerConfig:
    """Parse ``additional_config[CONFIG_KEY]`` (absent -> all defaults)."""
    raw = (additional or {}).get(CONFIG_KEY, {})
    if not isinstance(raw, dict):
        raise ValueError(
            f"additional_config[{CONFIG_KEY!r}] must be a mapping (got {type(raw).__name__})"
        )
    return _validated(EngineSchedulerConfig, CONFIG_KEY, raw)


def _validated(model: type[_C], key: str, raw: dict[str, Any]) -> _C:
    """``model(**raw)``; a ValueError naming ``additional_config.KEY.FIELD`` and the value."""
    try:
        return model(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ValueError(
            f"additional_config.{key}.{field}: {err['msg']} (got {err.get('input')!r})"
        ) from None


def additional_config(**fields: Any) -> dict[str, Any]:
    """``additional_config`` for EngineArgs, validated here so that bad fields fail early."""
    cfg = EngineSchedulerConfig(**fields)
    return {CONFIG_KEY: cfg.model_dump(exclude_defaults=True)}


def path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


TRACE_KEY = "slidingserve_trace"


class TraceConfig(BaseModel):
    """``additional_config["slidingserve_trace"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_trace: str = Field(min_length=1)  # .csv/.parquet path the measured steps go to
    policy: str = Field(default="vllm", min_length=1)  # the trace's policy column
    model_name: str = "unknown"  # provenance
    hardware: str | None = None  # provenance (None: machine-cpus)
    flush_every: int = Field(default=512, gt=0)
    keep: int = Field(default=50_000, gt=0)


def trace_config(additional: dict[str, Any] | None) -> TraceConfig:
    raw = (additional or {}).get(TRACE_KEY)
    if not isinstance(raw, dict):
        raise ValueError(f"additional_config[{TRACE_KEY!r}] must be a mapping with step_trace "
                         f"(got {type(raw).__name__})")
    return _validated(TraceConfig, TRACE_KEY, raw)


def traced_additional_config(step_trace: str, **fields: Any) -> dict[str, Any]:
    """``additional_config`` for EngineArgs with ``scheduler_cls=TRACED_SCHEDULER_CLS``."""
    cfg = TraceConfig(step_trace=step_trace, **fields)
    return {TRACE_KEY: cfg.model_dump(exclude_defaults=True)}
