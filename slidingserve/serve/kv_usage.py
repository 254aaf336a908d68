"""KV blocks in use on one engine, as vLLM reports them with each engine step.

vLLM's scheduler computes its KV usage (the share of the KV blocks held by requests; blocks
kept only as a prefix cache count as free) when it finishes a step and hands it to the stat
loggers of the ``AsyncLLM``. ``kv_stat_logger(usage)`` is such a logger: it keeps the latest
figure in ``usage``, in blocks. Between steps nothing is reported, so after requests were
aborted on an idle engine the figure is the one of the last step until the next one runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class KVUsage:
    """The engine's KV blocks: in use at the last step, of ``total`` (None until reported)."""

    used: int | None = None
    total: int | None = None
    as_of: float | None = None  # wall time of the step that reported ``used``

    def to_stats(self) -> dict[str, Any]:
        return {"kv_blocks_used": self.used, "kv_blocks_total": self.total,
                "kv_as_of": self.as_of}


def kv_stat_logger(usage: KVUsage) -> Any:
    """A vLLM stat-logger factory that writes each step's KV usage into ``usage``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class KVStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            blocks = vllm_config.cache_config.num_gpu_blocks
            usage.total = None if not blocks else int(blocks) - 1  # less vLLM's null block

        def record(self, scheduler_stats: Any, iteration_stats: Any,
                   mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            if scheduler_stats is not None and usage.total is not None:
                usage.used = round(scheduler_stats.kv_cache_usage * usage.total)
                usage.as_of = time.time()

        def log_engine_initialized(self) -> None:
            pass

    return KVStatLogger
