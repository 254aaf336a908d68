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


def run_to_completion(
    policy, requests: list[tuple[str, float, int, int]], total_blocks: int, max_steps: int = 20_000,
    max_num_seqs: int = 64,
) -> tuple[dict[int, int], int]:
    """A tiny host: runs plans exactly as given until every request has produced its tokens.

    ``requests``: (tier, arrival, prompt, output). Returns tokens produced per key and the
    steps taken. Preempted requests lose their KV and recompute, as in vLLM.
    """
    specs = {k: r for k, r in enumerate(requests)}
    views: dict[int, RequestView] = {}
    running: list[int] = []
    produced: dict[int, int] = {}
    free, now = total_blocks, 0.0
    for step in range(max_steps):
        for k, (t, arr, p, _) in specs.items():
            if k not in views and arr <= now:
                views[k] = RequestView(k, tier(t), arr, p, 0, 0)
        live = [k for k in views if k not in produced]
        if not live and len(views) == len(specs):
            return produced, step
        wait = [views[k] for k in live if k not in running]
        st = SchedulerInput(now, [views[k] for k in running], wait,
                            KVState(free, total_blocks, BLOCK),
                            HostLimits(max_num_seqs=max_num_seqs, max_batch_tokens=4096))
        plan = policy.schedule(st)
        for k in plan.preempt:
            v = views[k]
            free += v.num_blocks
            v.num_blocks, v.num_computed = 0, 0
            running.remove(k)
        for k, n in plan.scheduled:
            v = views[k]
            need = max(-(-(v.num_computed + n) // BLOCK) - v.num_blocks, 0)
            assert need <= free, "plan over-allocates KV"
            free -= need
            v.num_blocks += need
            if k not in running:
                running.append(k)
        now += max(plan.predicted_s, 0.005)
        for k, n in plan.scheduled:
            v = views[k]
            v.num_computed += n
            if v.num_computed == v.prompt_len + v.num_generated:
                v.num_generated += 1
                if v.first_token_s is None:
                    v.first_token_s = now
                if v.num_generated == specs[k][3]:
                    produced[k] = v.num_generated
                    free += v.num_blocks
                    v.num_blocks = 0
                    running.remove(k)
                    policy.forget(k)
    return produced, max_steps
