"""``slidingserve bench prefix``: TTFT with and without prefix caching on multi-turn chats.

The workload: ``conversations`` chats start ``start_gap_s`` apart; every chat opens with the
same ``system_tokens`` system prompt, and each of its ``turns`` turns sends the whole history
(system prompt, every earlier user message and the tokens the engine answered) plus a new
``user_tokens`` message, waits for its ``output_tokens`` answer, thinks ``think_s`` and sends
the next. Both runs replay the same workload through an in-process ``AsyncLLM`` on the tiny CPU
model with the SlidingServe scheduler, once with ``enable_prefix_caching`` and once without;
the TTFT of every turn is measured from its send to its first token.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slidingserve.engine.slo import slo_extra_args


class PrefixBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    conversations: int = Field(default=8, gt=0)
    turns: int = Field(default=4, gt=0)
    system_tokens: int = Field(default=512, ge=0)
    user_tokens: int = Field(default=64, gt=0)
    output_tokens: int = Field(default=32, gt=0)
    start_gap_s: float = Field(default=0.5, ge=0)
    think_s: float = Field(default=0.2, ge=0)
    tier: str = "standard"
    policy: str = "slidingserve"
    kv_cache_bytes: int = Field(default=64 * 2**20, gt=0)
    max_num_batched_tokens: int = Field(default=512, gt=0)
    max_model_len: int = Field(default=2048, gt=0)
    seed: int = 0

    def longest_prompt(self) -> int:
        return self.system_tokens + self.turns * self.user_tokens + \
            (self.turns - 1) * self.output_tokens


def _tokens(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(10, 8000, n).tolist()


async def _chat(engine: Any, cfg: PrefixBenchConfig, chat: int, system: list[int],
                t0: float, out: list[dict[str, Any]]) -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    rng = np.random.default_rng(cfg.seed * 1000 + chat + 1)
    params = SamplingParams(max_tokens=cfg.output_tokens, ignore_eos=True, temperature=0.0,
                            output_kind=RequestOutputKind.DELTA,
                            extra_args=slo_extra_args(cfg.tier))
    history = list(system)
    await asyncio.sleep(max(0.0, t0 + chat * cfg.start_gap_s - time.perf_counter()))
    for turn in range(cfg.turns):
        history += _tokens(rng, cfg.user_tokens)
        sent = time.perf_counter()
        first: float | None = None
        answer: list[int] = []
        cached = None
        async for o in engine.generate({"prompt_token_ids": list(history)}, params,
                                       request_id=f"chat{chat}-turn{turn}"):
            if o.outputs[0].token_ids and first is None:
                first = time.perf_counter()
            answer += o.outputs[0].token_ids
            if o.num_cached_tokens is not None:
                cached = o.num_cached_tokens
        out.append({"chat": chat, "turn": turn, "prompt_tokens": len(history),
                    "ttft_s": None if first is None else first - sent,
                    "cached_tokens": cached, "output_tokens": len(answer)})
        history += answer
        await asyncio.sleep(cfg.think_s)


async def run_once(cfg: PrefixBenchConfig, prefix_caching: bool, out_dir: Path
                   ) -> list[dict[str, Any]]:
    """Replay the workload on a fresh engine; one row per turn."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from slidingserve.engine.bench_config import DEFAULT_LATENCY_MODEL
    from slidingserve.engine.config import SCHEDULER_CLS, additional_config
    from slidingserve.models import cpu_engine_kwargs, ensure_tiny_model

    model = ensure_tiny_model()
    latency = DEFAULT_LATENCY_MODEL if DEFAULT_LATENCY_MODEL.is_dir() else None
    kw = cpu_engine_kwargs(
        model, kv_cache_memory_bytes=cfg.kv_cache_bytes, max_model_len=cfg.max_model_len,
        max_num_batched_tokens=cfg.max_num_batched_tokens, seed=cfg.seed,
        enable_prefix_caching=prefix_caching, disable_log_stats=True,
        scheduler_cls=SCHEDULER_CLS,
        additional_config=additional_config(
            policy=cfg.policy, latency_model=None if latency is None else str(latency),
            step_trace=str(out_dir / f"steps-{'cache' if prefix_caching else 'nocache'}.csv"),
            model_name=model.name),
    )
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kw))
    try:
        from vllm import SamplingParams

        warm: Any = {"prompt_token_ids": _tokens(np.random.default_rng(99), 64)}
        async for _ in engine.generate(warm, SamplingParams(
                max_tokens=4, extra_args=slo_extra_args(cfg.tier)), request_id="warm-up"):
            pass
        system = _tokens(np.random.default_rng(cfg.seed), cfg.system_tokens)
        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(_chat(engine, cfg, c, system, t0, rows)
                               for c in range(cfg.conversations)))
        return rows
    finally:
        engine.shutdown()


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = np.array([r["ttft_s"] for r in rows if r["ttft_s"] is not None])
    prompt = sum(r["prompt_tokens"] for r in rows)
    cached = sum(r["cached_tokens"] or 0 for r in rows)
    return {
        "requests": len(rows),
        "ttft_p50_ms": float(np.percentile(ttft, 50) * 1e3),
        "ttft_p99_ms": float(np.percentile(ttft, 99) * 1e3),
        "ttft_mean_ms": float(ttft.mean() * 1e3),
        "cached_token_share": cached / prompt if prompt else 0.0,
    }


async def compare(cfg: PrefixBenchConfig, out_dir: Path) -> dict[str, Any]:
    """Both runs (caching off first), their summaries written to ``out_dir/prefix.json``."""
    if cfg.longest_prompt() + cfg.output_tokens > cfg.max_model_len:
        raise ValueError(f"the last turn's prompt ({cfg.longest_prompt()} tokens) plus its "
                         f"answer exceeds max_model_len {cfg.max_model_len}")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"config": cfg.model_dump()}
    for caching in (False, True):
        rows = await run_once(cfg, caching, out_dir)
        name = "prefix_caching" if caching else "no_prefix_caching"
        result[name] = {"summary": summarize(rows), "turns": rows}
    (out_dir / "prefix.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
