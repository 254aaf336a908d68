"""Factories for policy tests: requests, KV states and scheduler inputs built in one line."""

from __future__ import annotations

from slidingserve.latency import RooflineModel
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput
from slidingserve.slo import SLOTier, load_tiers

TIERS = load_tiers()
BLOCK = 16


def tier(name: str) -> SLOTier:
    return TIERS[name]


def waiting(
    key: int, tier_name: str = "standard", arrival: float = 0.0, prompt: int = 100
) -> RequestView:
    """A new request that has not run yet."""
    return RequestView(
        key=key,
        tier=tier(tier_name),
        arrival_s=arrival,
        prompt_len=prompt,
        num_computed=0,
        num_generated=0,
    )


def decoding(
    key: int,
    tier_name: str = "standard",
    arrival: float = 0.0,
    prompt: int = 100,
    generated: int = 1,
    first_token_s: float | None = None,
) -> RequestView:
    """A running request past its prefill: one token pending, blocks for what it computed."""
    computed = prompt + generated - 1
    return RequestView(
        key=key,
        tier=tier(tier_name),
        arrival_s=arrival,
        prompt_len=prompt,
        num_computed=computed,
        num_generated=generated,
        num_blocks=-(-computed // BLOCK),
        first_token_s=arrival + 0.1 if first_token_s is None else first_token_s,
    )


def prefilling(
    key: int,
    tier_name: str = "standard",
    arrival: float = 0.0,
    prompt: int = 1000,
    computed: int = 256,
) -> RequestView:
    """A running request part-way through its prompt."""
    return RequestView(
        key=key,
        tier=tier(tier_name),
        arrival_s=arrival,
        prompt_len=prompt,
        num_computed=computed,
        num_generated=0,
        num_blocks=-(-computed // BLOCK),
    )


def state(
    running: list[RequestView] | None = None,
    waiting_: list[RequestView] | None = None,
    now: float = 0.0,
    free_blocks: int = 100_000,
    max_num_seqs: int = 256,
    max_batch_tokens: int = 16384,
) -> SchedulerInput:
    running = running or []
    used = sum(r.num_blocks for r in running)
    kv = KVState(free_blocks=free_blocks, total_blocks=free_blocks + used, block_size=BLOCK)
    return SchedulerInput(
        now_s=now,
        running=running,
        waiting=waiting_ or [],
        kv=kv,
        limits=HostLimits(max_num_seqs=max_num_seqs, max_batch_tokens=max_batch_tokens),
    )


def roofline() -> RooflineModel:
    return RooflineModel()
