"""The vLLM adapter: SlidingServe policies scheduling a real vLLM v1 engine.

* ``scheduler.SlidingServeScheduler``: the ``scheduler_cls`` (imports vLLM; version-checked);
* ``config``: what the scheduler reads from ``additional_config["slidingserve"]``;
* ``slo``: per-request SLO metadata in ``SamplingParams.extra_args``;
* ``book``: our integer keys and the policy's view of each request;
* ``latency_source``: the engine's latency model, hot-swapped between steps;
* ``steps``: per-step latency + features (the predictor's step-trace format) and overhead;
* ``bench`` / ``cli``: ``slidingserve bench engine``.

Importing this package does not import vLLM.
"""

from slidingserve.engine.config import (
    SCHEDULER_CLS,
    EngineSchedulerConfig,
    additional_config,
    config_from_additional,
)
from slidingserve.engine.slo import SLOError, slo_extra_args, tier_of
from slidingserve.engine.versions import (
    SUPPORTED_VLLM,
    UnsupportedVllmError,
    require_supported_vllm,
)

__all__ = [
    "SCHEDULER_CLS",
    "SUPPORTED_VLLM",
    "EngineSchedulerConfig",
    "SLOError",
    "UnsupportedVllmError",
    "additional_config",
    "config_from_additional",
    "require_supported_vllm",
    "slo_extra_args",
    "tier_of",
]
