"""vLLM's engine stats as Ray metrics: a ``StatLoggerBase`` for ``AsyncLLM(stat_loggers=...)``.

The engine core sends ``SchedulerStats`` (running/waiting requests, KV-cache use, prefix-cache
lookups) and the output processor ``IterationStats`` (preemptions, prompt and generated tokens)
to every stat logger after each step; this one forwards them to the replica's
``VLLMEngineMetrics`` (``ray.util.metrics``, tagged by replica), the way Ray Serve LLM's
``log_engine_metrics`` forwards them through vLLM's ``RayPrometheusStatLogger``. It records a
focused set under the application's own names, so the dashboards query one naming scheme.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, MultiModalCacheStats, SchedulerStats

from slidingserve.serve.metrics import VLLMEngineMetrics


class RayStatLogger(StatLoggerBase):
    """Per-engine stat logger writing to ``VLLMEngineMetrics``; build it with ``factory``."""

    def __init__(self, vllm_config: Any, engine_index: int = 0, *,
                 metrics: VLLMEngineMetrics | None = None):
        if metrics is None:
            raise ValueError("RayStatLogger needs the replica's metrics: use "
                             "RayStatLogger.factory(metrics)")
        self.metrics = metrics
        self.engine_index = engine_index

    @classmethod
    def factory(cls, metrics: VLLMEngineMetrics) -> Any:
        """What ``AsyncLLM(stat_loggers=[...])`` calls with ``(vllm_config, engine_index)``."""
        return partial(cls, metrics=metrics)

    def record(self, scheduler_stats: SchedulerStats | None,
               iteration_stats: IterationStats | None,
               mm_cache_stats: MultiModalCacheStats | None = None,
               engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            cache = scheduler_stats.prefix_cache_stats
            self.metrics.scheduler_state(
                scheduler_stats.num_running_reqs,
                scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                scheduler_stats.kv_cache_usage,
                cache.queries + cache.preempted_queries,
                cache.hits + cache.preempted_hits,
            )
        if iteration_stats is not None:
            prompt = iteration_stats.prompt_token_stats
            self.metrics.iteration(
                iteration_stats.num_preempted_reqs, prompt.computed, prompt.cached_tokens,
                iteration_stats.num_generation_tokens,
            )

    def log_engine_initialized(self) -> None:
        pass
