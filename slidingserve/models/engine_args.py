"""EngineArgs for the tiny model on a CPU vLLM engine, with small, sane defaults.

vLLM's CPU defaults ask for most of the machine's RAM as KV cache and large batches; these
defaults fit a 2-core, shared machine. float32, because on CPUs without AVX512-BF16 vLLM's
bfloat16 path falls back to slow kernels (measured here: 256-token prefill 0.05 s in float32
vs 0.47 s in bfloat16; a 16-request decode step 18 ms vs 257 ms). Async scheduling is off
(vLLM's CPU platform turns it off anyway; ``slidingserve/engine/README.md``). Prefix caching is
off by default here, so that the schedulers' benchmarks (whose synthetic prompts share nothing)
measure the same engine as before; pass ``enable_prefix_caching=True`` to turn it on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_KV_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_MODEL_LEN = 2048
DEFAULT_MAX_NUM_SEQS = 32
DEFAULT_MAX_BATCHED_TOKENS = 512


def cpu_engine_kwargs(
    model: str | Path,
    *,
    kv_cache_memory_bytes: int = DEFAULT_KV_CACHE_BYTES,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
    max_num_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.EngineArgs``/``AsyncEngineArgs`` (and ``vllm.LLM``)."""
    for name, value in (
        ("kv_cache_memory_bytes", kv_cache_memory_bytes),
        ("max_model_len", max_model_len),
        ("max_num_seqs", max_num_seqs),
        ("max_num_batched_tokens", max_num_batched_tokens),
    ):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"cpu engine args: {name} must be a positive int (got {value!r})")
    kwargs: dict[str, Any] = {
        "model": str(model),
        "tokenizer": str(model),
        "dtype": "float32",
        "kv_cache_memory_bytes": kv_cache_memory_bytes,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "enable_chunked_prefill": True,
        "enable_prefix_caching": False,
        "async_scheduling": False,
        "enforce_eager": True,
        "seed": seed,
    }
    kwargs.update(overrides)
    return kwargs


def cpu_engine_args(model: str | Path, **kwargs: Any) -> Any:
    """``vllm.engine.arg_utils.AsyncEngineArgs`` built from ``cpu_engine_kwargs``."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**cpu_engine_kwargs(model, **kwargs))


def in_process_engine(kwargs: dict[str, Any]) -> Any:
    """A ``vllm.v1.engine.llm_engine.LLMEngine`` whose engine core (and so its scheduler) runs
    in this process, for code that reaches into the scheduler: ``VLLM_ENABLE_V1_MULTIPROCESSING``
    is 0 while it is built, then as it was."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    old = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        return LLMEngine.from_engine_args(EngineArgs(**kwargs))
    finally:
        if old is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = old
