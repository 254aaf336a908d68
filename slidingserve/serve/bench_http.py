"""Open-loop HTTP load against any deployment, measured client-side per tier.

Requests come from the workload builder (``slidingserve.workload``: Poisson arrivals at
``rate`` over ``duration_s``, lengths drawn from a trace or the built-in synthetic workload,
tiers from a tier mix). Each is sent at its arrival time whatever the others are doing (open
loop) as a streaming ``/v1/completions`` with ``ignore_eos`` so it produces exactly its output
length; prompts are token ids, so prompt lengths are exact. The client records when each
token arrives; ``summary.json`` is the shared ``slidingserve.summary/v1`` format (same as the
simulator and engine benchmarks) plus an ``http`` section (refusals, errors, clipping).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slidingserve.metrics.records import RequestRecord
from slidingserve.metrics.summary import summarize
from slidingserve.slo.tiers import TierSet
from slidingserve.workload.build import WorkloadConfig, build_workload
from slidingserve.workload.spec import RequestSpec

PROMPT_TOKEN_RANGE = (10, 500)  # ids valid in any vocabulary of >= 512 tokens


def is_output(choice: dict[str, Any]) -> bool:
    """A stream chunk's choice that carries the request's output, so that its arrival is a
    token's (the first one's: the TTFT): every completion chunk, and a chat chunk past the
    role chunk. A chunk's text can be empty while the detokenizer holds back the bytes of a
    character not complete yet (the tiny model's random weights pick byte tokens now and
    then: one request in about a hundred showed text only tokens later); vLLM's own serving
    benchmark counts such chunks too."""
    delta = choice.get("delta")
    return delta is None or "role" not in delta


@dataclass(frozen=True)
class BenchConfig:
    url: str
    rate: float
    duration_s: float
    tier_mix: dict[str, float] | None = None
    trace: str | None = None
    max_prompt_tokens: int = 1024
    max_output_tokens: int = 128
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    seed: int = 0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("rate", "duration_s", "max_prompt_tokens", "max_output_tokens", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"bench http: {name} must be a positive number (got {value!r})")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"bench http: url must start with http(s):// (got {self.url!r})")

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["api_key"] = "<set>" if self.api_key else None
        return out


@dataclass
class Outcome:
    spec: RequestSpec
    record: RequestRecord
    status: int | None = None
    error: str | None = None


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an SSE body, split at newlines only: generated text may hold characters
    that ``str.splitlines`` (and so ``httpx``'s ``aiter_lines``) also breaks at, such as
    U+2028, inside one JSON event."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode(errors="replace")
    if buf:
        yield buf.rstrip(b"\r").decode(errors="replace")


def plan(cfg: BenchConfig, tiers: TierSet) -> list[RequestSpec]:
    """The workload: ``rate * duration`` Poisson arrivals, lengths clipped to the limits."""
    n = max(1, round(cfg.rate * cfg.duration_s))
    wl = WorkloadConfig(trace=Path(cfg.trace) if cfg.trace else None, arrival="poisson",
                        rate=cfg.rate, num_requests=n, tier_mix=cfg.tier_mix, seed=cfg.seed)
    specs = [s for s in build_workload(wl, tiers) if s.arrival_s <= cfg.duration_s] or \
        build_workload(wl, tiers)[:1]
    return [
        RequestSpec(s.key, s.arrival_s, min(s.prompt_len, cfg.max_prompt_tokens),
                    min(s.output_len, cfg.max_output_tokens), s.tier)
        for s in specs
    ]


async def one_request(client: httpx.AsyncClient, cfg: BenchConfig, spec: RequestSpec,
                      t0: float, rng: random.Random) -> Outcome:
    prompt = [rng.randrange(*PROMPT_TOKEN_RANGE) for _ in range(spec.prompt_len)]
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": spec.output_len, "stream": True,
                            "ignore_eos": True, "temperature": 0.0,
                            "stream_options": {"include_usage": True}}
    if cfg.model:
        body["model"] = cfg.model
    headers = {"x-slo-tier": spec.tier}
    if cfg.api_key:
        headers["authorization"] = f"Bearer {cfg.api_key}"
    await asyncio.sleep(max(0.0, t0 + spec.arrival_s - time.perf_counter()))
    arrival = time.perf_counter()
    times: list[float] = []
    n_out, finished, status, error = 0, False, None, None
    try:
        async with client.stream("POST", f"{cfg.url}/v1/completions", json=body,
                                 headers=headers) as resp:
            status = resp.status_code
            if status != 200:
                error = (await resp.aread()).decode(errors="replace")[:300]
            else:
                async for line in sse_lines(resp.aiter_bytes()):
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        finished = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        error = str(event["error"].get("message"))
                        break
                    if event.get("usage"):
                        n_out = int(event["usage"]["completion_tokens"])
                    if any(is_output(c) for c in event.get("choices", [])):
                        times.append(time.perf_counter())
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    n_out = n_out or len(times)
    token_times = times if len(times) == n_out else None
    record = RequestRecord(
        arrival_s=arrival - t0, tier=spec.tier,
        first_token_s=(times[0] - t0) if times else None,
        last_token_s=(times[-1] - t0) if times else None,
        n_out=n_out, finished=finished and error is None,
        token_times=[t - t0 for t in token_times] if token_times else None,
        expected_tokens=spec.output_len, key=spec.key,
    )
    return Outcome(spec, record, status, error)


async def run_bench(cfg: BenchConfig, tiers: TierSet, progress: Any = None) -> list[Outcome]:
    specs = plan(cfg, tiers)
    rng = random.Random(cfg.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(cfg.timeout_s, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one_request(client, cfg, s, t0, random.Random(rng.random())))
                 for s in specs]
        outcomes = []
        for fut in asyncio.as_completed(tasks):
            outcomes.append(await fut)
            if progress is not None:
                progress()
    return sorted(outcomes, key=lambda o: o.spec.key)


def bench_summary(cfg: BenchConfig, tiers: TierSet, outcomes: list[Outcome]) -> dict[str, Any]:
    summary = summarize([o.record for o in outcomes], tiers)
    statuses = Counter(str(o.status) for o in outcomes)
    errors = [o.error for o in outcomes if o.error and o.status in (200, None)]
    summary["http"] = {
        "config": cfg.public(),
        "status_counts": dict(sorted(statuses.items())),
        "rejected_429": statuses.get("429", 0),
        "rejected_429_by_tier": dict(Counter(o.spec.tier for o in outcomes if o.status == 429)),
        "stream_errors": len(errors),
        "first_errors": sorted({e for e in (o.error for o in outcomes) if e})[:5],
    }
    return summary
