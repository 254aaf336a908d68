"""SlidingServeScheduler with vLLM's prefix caching on, on a real vLLM-CPU engine.

One in-process engine for the module: 64 tokens per step and a KV cache of 11 blocks of 128
tokens, so shared-prefix requests both hit the cache and, several at a time, run it out.
Greedy sampling: a request's tokens must not depend on whether its prefix came from the cache.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from slidingserve.engine import SCHEDULER_CLS, additional_config, slo_extra_args  # noqa: E402
from slidingserve.engine.latency_source import write_roofline_dir  # noqa: E402
from slidingserve.latency import RooflineConfig  # noqa: E402
from slidingserve.models import cpu_engine_kwargs, ensure_tiny_model, in_process_engine  # noqa: E402

KV_BYTES = 12 * 1024 * 1024  # 11 blocks of 128 tokens (+ the null block)
PREFIX = [10 + (i * 7) % 4000 for i in range(300)]  # two full blocks and part of a third


def suffix(seed: int, n: int = 40) -> list[int]:
    return [100 + (seed * 131 + i * 17) % 3000 for i in range(n)]


class Engine:
    def __init__(self, engine: Any):
        from vllm import SamplingParams

        self.engine = engine
        self.sched = engine.engine_core.engine_core.scheduler
        self._params = SamplingParams
        self._ids = itertools.count()

    def add(self, tokens: list[int], max_tokens: int) -> str:
        rid = f"p{next(self._ids)}"
        params = self._params(max_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                              extra_args=slo_extra_args("standard"))
        self.engine.add_request(rid, {"prompt_token_ids": tokens}, params)
        return rid

    def run(self, max_steps: int = 3000) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for _ in range(max_steps):
            if not self.engine.has_unfinished_requests():
                return done
            done.update((o.request_id, o) for o in self.engine.step() if o.finished)
        raise AssertionError(f"engine not idle after {max_steps} steps")

    def cold(self, tokens: list[int], max_tokens: int) -> list[int]:
        """The request's tokens from an empty prefix cache, run alone."""
        assert self.engine.reset_prefix_cache()
        rid = self.add(tokens, max_tokens)
        out = self.run()[rid]
        assert out.num_cached_tokens == 0
        return list(out.outputs[0].token_ids)


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("engine")
    model = ensure_tiny_model(Path(os.environ.get("SLIDINGSERVE_DATA_DIR", root)))
    kwargs = cpu_engine_kwargs(
        model, kv_cache_memory_bytes=KV_BYTES, max_model_len=512, max_num_seqs=8,
        max_num_batched_tokens=64, enable_prefix_caching=True, scheduler_cls=SCHEDULER_CLS,
        additional_config=additional_config(
            policy="slidingserve",
            latency_model=str(write_roofline_dir(root / "latency", RooflineConfig(), "v1")),
            model_name="tiny-llama",
        ),
    )
    engine = in_process_engine(kwargs)  # the tests reach into the scheduler
    yield Engine(engine)
    engine.engine_core.shutdown()


def test_second_request_starts_from_the_cached_prefix(eng: Engine) -> None:
    sched, bs = eng.sched, eng.sched.block_size
    assert sched.prefix is not None
    second = PREFIX + suffix(2)
    cold = eng.cold(second, 12)
    assert eng.engine.reset_prefix_cache()
    eng.add(PREFIX + suffix(1), 12)
    eng.run()
    rid = eng.add(second, 12)
    # before admission, the policy sees the cached prefix as computed (whole blocks only)
    (view,) = sched._snapshot().waiting
    cached = view.num_computed
    assert cached == len(PREFIX) // bs * bs > 0
    out = eng.run()[rid]
    assert out.num_cached_tokens == cached
    assert list(out.outputs[0].token_ids) == cold
    assert sched.counters["liveness_preemptions"] == 0


def test_shared_prefixes_under_kv_pressure_match_cold_runs(eng: Engine) -> None:
    """Six requests sharing a prefix, more than the cache holds at once: the policy preempts,
    every request finishes with its cold-run tokens, and every block is free again."""
    sched = eng.sched
    prompts = [PREFIX + suffix(10 + k) for k in range(6)]
    cold = [eng.cold(p, 60) for p in prompts]
    assert eng.engine.reset_prefix_cache()
    before = dict(sched.counters)
    ids = [eng.add(p, 60) for p in prompts]
    assert 6 * -(-(len(prompts[0]) + 60) // sched.block_size) > sched.total_blocks
    shared_seen = 0
    done: dict[str, Any] = {}
    for _ in range(3000):
        if not eng.engine.has_unfinished_requests():
            break
        state = sched._snapshot()
        for v in state.running:  # the views' accounting against vLLM's block tables
            blocks = sched.kv_cache_manager.coordinator.get_blocks(sched.book.by_key[v.key]
                                                                   .request.request_id)[0]
            assert v.num_blocks <= len(blocks)
            assert v.num_shared_blocks == sum(1 for b in blocks if b.ref_cnt > 1)
            shared_seen += v.num_shared_blocks
        done.update((o.request_id, o) for o in eng.engine.step() if o.finished)
    assert shared_seen > 0  # running requests did share prefix blocks
    assert sched.counters["preemptions"] > before["preemptions"]
    assert sched.counters["liveness_preemptions"] == before["liveness_preemptions"]
    assert sum(done[r].num_cached_tokens or 0 for r in ids) > 0
    for rid, want in zip(ids, cold, strict=True):
        assert list(done[rid].outputs[0].token_ids) == want, rid
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == sched.total_blocks
    assert not sched.book.by_id
