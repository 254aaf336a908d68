"""Every registered policy emits a valid plan on random inputs (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_factories import BLOCK, TIERS, roofline

from slidingserve.policy import make_policy, policy_names
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput, StepPlan

TIER_NAMES = list(TIERS)


@st.composite
def requests(draw: st.DrawFn, key: int, running: bool, now: float) -> RequestView:
    tier = TIERS[draw(st.sampled_from(TIER_NAMES))]
    arrival = now - draw(st.floats(0.0, 700.0))
    prompt = draw(st.integers(1, 3000))
    if running:
        generated = draw(st.integers(0, 400))
        pending = 1 if generated > 0 else draw(st.integers(1, prompt))
        computed = prompt + generated - pending
        if generated == 0 and computed == 0:
            computed, pending = 0, prompt
        blocks = -(-computed // BLOCK) if computed else 0
        first = arrival + draw(st.floats(0.0, 10.0)) if generated else None
    else:
        generated = draw(st.integers(0, 3))  # > 0: preempted, recompute pending
        computed, blocks, first = 0, 0, (arrival + 1.0 if generated else None)
    return RequestView(
        key=key,
        tier=tier,
        arrival_s=arrival,
        prompt_len=prompt,
        num_computed=computed,
        num_generated=generated,
        num_blocks=blocks,
        first_token_s=first,
    )


@st.composite
def scheduler_inputs(draw: st.DrawFn) -> SchedulerInput:
    now = draw(st.floats(0.0, 5000.0))
    n_run = draw(st.integers(0, 24))
    n_wait = draw(st.integers(0, 24))
    running = [draw(requests(k, True, now)) for k in range(n_run)]
    running = [r for r in running if r.num_computed > 0 or r.num_blocks > 0] or running[:0]
    waiting = [draw(requests(100 + k, False, now)) for k in range(n_wait)]
    free = draw(st.integers(0, 400))
    used = sum(r.num_blocks for r in running)
    limits = HostLimits(
        max_num_seqs=draw(st.integers(1, 32)),
        max_batch_tokens=draw(st.integers(1, 8192)),
        max_model_len=4096,
    )
    return SchedulerInput(
        now_s=now,
        running=running,
        waiting=waiting,
        kv=KVState(free_blocks=free, total_blocks=free + used, block_size=BLOCK),
        limits=limits,
    )


def check_plan(state: SchedulerInput, plan: StepPlan, budget: int | None) -> None:
    by_key = {r.key: r for r in state.running + state.waiting}
    running = {r.key for r in state.running}
    keys = [k for k, _ in plan.scheduled]
    assert len(keys) == len(set(keys)), "duplicate key in scheduled"
    assert len(plan.preempt) == len(set(plan.preempt)), "duplicate key in preempt"
    assert not set(keys) & set(plan.preempt), "key both scheduled and preempted"
    assert set(plan.preempt) <= running, "preempted a request that is not running"
    assert set(keys) <= set(by_key), "scheduled an unknown key"
    for k, n in plan.scheduled:
        r = by_key[k]
        assert 0 < n <= r.remaining_prefill, (k, n, r.remaining_prefill)
        assert r.num_computed + n <= state.limits.max_model_len
    cap = (
        state.limits.max_batch_tokens
        if budget is None
        else min(budget, state.limits.max_batch_tokens)
    )
    assert plan.num_tokens <= cap
    assert len(plan.scheduled) <= state.limits.max_num_seqs
    free = state.kv.free_blocks + sum(by_key[k].num_blocks for k in plan.preempt)
    for k, n in plan.scheduled:
        r = by_key[k]
        free -= max(state.kv.blocks_for(r.num_computed + n) - r.num_blocks, 0)
        assert free >= 0, "KV blocks over-committed"
    assert plan.predicted_s >= 0.0


@pytest.mark.parametrize("name", policy_names())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=st.lists(scheduler_inputs(), min_size=1, max_size=3))
def test_every_policy_plans_validly(name: str, states: list[SchedulerInput]) -> None:
    policy = make_policy(name, roofline())  # one object across steps: per-request state too
    for s in states:
        check_plan(s, policy.schedule(s), policy.token_budget)


@pytest.mark.parametrize("name", policy_names())
def test_empty_input_gives_empty_plan(name: str) -> None:
    s = SchedulerInput(0.0, [], [], KVState(10, 10, BLOCK), HostLimits())
    plan = make_policy(name, roofline()).schedule(s)
    assert plan.scheduled == [] and plan.preempt == []


@pytest.mark.parametrize("name", policy_names())
def test_bad_config_value_is_named(name: str) -> None:
    with pytest.raises(ValueError, match="nonexistent_field"):
        make_policy(name, roofline(), nonexistent_field=1)
