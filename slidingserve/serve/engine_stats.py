"""vLLM's engine stats, for the replica: a ``StatLoggerBase`` for ``AsyncLLM(stat_loggers=...)``.

The engine core sends ``SchedulerStats`` (running/waiting requests, KV-cache use, prefix-cache
lookups) and the output processor ``IterationStats`` (preemptions, prompt and generated tokens)
to every stat logger after each step; this one forwards them to the replica's
``VLLMEngineMetrics`` (``ray.util.metrics``, tagged by replica), the way Ray Serve LLM's
``log_engine_metrics`` forwards them through vLLM's ``RayPrometheusStatLogger``. It records a
focused set under the application's own names, so the dashboards query one naming scheme.

It also keeps the KV blocks in use as of the last step in the replica's ``KVUsage`` (its
routing stats and the soak read it). vLLM reports only when an engine runs a step: after
requests were aborted on an idle engine the figure is the last step's until the next one runs.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, MultiModalCacheStats, SchedulerStats

from slidingserve.serve.load import KVUsage
from slidingserve.serve.metrics import VLLMEngineMetrics


class EngineStatLogger(StatLoggerBase):
    """Per-engine stat logger: KV blocks into ``kv``, and with ``metrics`` every figure into
    the replica's ``VLLMEngineMetrics``; build it with ``factory``."""

    def __init__(self, vllm_config: Any, engine_index: int = 0, *,
                 kv: KVUsage | None = None, metrics: VLLMEngineMetrics | None = None):
        if kv is None:
            raise ValueError("EngineStatLogger needs the replica's KVUsage: use "
                             "EngineStatLogger.factory(kv, metrics)")
        self.kv, self.metrics = kv, metrics
        self.engine_index = engine_index
        blocks = vllm_config.cache_config.num_gpu_blocks
        kv.total = None if not blocks else int(blocks) - 1  # less vLLM's null block

    @classmethod
    def factory(cls, kv: KVUsage, metrics: VLLMEngineMetrics | None) -> Any:
        """What ``AsyncLLM(stat_loggers=[...])`` calls with ``(vllm_config, engine_index)``
        (``metrics`` None: no Ray metrics, ``engine.engine_metrics`` off)."""
        return partial(cls, kv=kv, metrics=metrics)

    def record(self, scheduler_stats: SchedulerStats | None,
               iteration_stats: IterationStats | None,
               mm_cache_stats: MultiModalCacheStats | None = None,
               engine_idx: int = 0) -> None:
        if scheduler_stats is not None and self.kv.total is not None:
            self.kv.used = round(scheduler_stats.kv_cache_usage * self.kv.total)
            self.kv.as_of = time.time()
        if self.metrics is None:
            return
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
