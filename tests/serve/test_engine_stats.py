"""The replica's vLLM stat logger: KV blocks in use for the routing stats, with and without the
Ray metrics (``engine.engine_metrics``). The Ray metrics themselves are checked on the real app
(``tests/serve/test_app.py``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from vllm.v1.metrics.stats import SchedulerStats

from slidingserve.serve.engine_stats import EngineStatLogger
from slidingserve.serve.load import KVUsage


def _config(blocks: int) -> SimpleNamespace:  # the only field the logger reads
    return SimpleNamespace(cache_config=SimpleNamespace(num_gpu_blocks=blocks))


def test_kv_blocks_in_use_follow_the_last_step_without_ray_metrics() -> None:
    kv = KVUsage()
    logger = EngineStatLogger.factory(kv, None)(_config(64), 0)
    assert kv.total == 63 and kv.used is None  # less vLLM's null block
    logger.record(SchedulerStats(kv_cache_usage=0.5), None)
    assert kv.used == 32 and kv.as_of is not None
    logger.record(None, None)  # a step without scheduler stats changes nothing
    assert kv.used == 32
    logger.record(SchedulerStats(kv_cache_usage=0.0), None)
    assert kv.used == 0
    assert kv.to_stats()["kv_blocks_total"] == 63


def test_the_logger_needs_the_replicas_kv_usage() -> None:
    with pytest.raises(ValueError, match="KVUsage"):
        EngineStatLogger(_config(8), 0)
