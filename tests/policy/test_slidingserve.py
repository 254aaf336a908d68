"""SlidingServe's step: decodes kept, slack respected, tiers protected, nothing dropped."""

from __future__ import annotations

import numpy as np
import pytest
from policy_factories import decoding, prefilling, roofline, run_to_completion, state, waiting
from test_plan_validity import check_plan

from slidingserve.policy import make_policy, policy_names
from slidingserve.policy.deadlines import next_due


def test_runs_every_decode_and_fits_the_tightest_slack() -> None:
    decs = [decoding(i, "interactive", arrival=0.0, prompt=1000, generated=10,
                     first_token_s=0.55 + 0.01 * i) for i in range(20)]
    decs += [decoding(100 + i, "batch", prompt=2000, generated=5) for i in range(20)]
    queue = [waiting(200 + i, "standard", arrival=1.0, prompt=3000) for i in range(5)]
    st = state(running=decs, waiting_=queue, now=1.0)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    keys = {k for k, _ in plan.scheduled}
    assert {r.key for r in decs} <= keys  # every decode runs
    tightest = min(next_due(r) for r in decs) - st.now_s
    assert 0 < plan.predicted_s <= tightest + 1e-12
    assert plan.stats["prefill_tokens"] > 0  # the slack is used for prefill
    check_plan(st, plan, None)


def test_interactive_prefill_goes_before_batch() -> None:
    st = state(waiting_=[waiting(1, "batch", arrival=0.0, prompt=2000),
                         waiting(2, "interactive", arrival=5.0, prompt=2000)], now=5.0)
    plan = make_policy("slidingserve", roofline(), chunker={"max_chunk": 2000}).schedule(st)
    assert plan.scheduled == [(2, 2000)]


def test_kv_pressure_preempts_lowest_tier_with_most_slack() -> None:
    r_int = decoding(1, "interactive", arrival=0.0, prompt=16, generated=1, first_token_s=0.5)
    r_std = decoding(2, "standard", arrival=0.0, prompt=40, generated=1)
    r_bat = decoding(3, "batch", arrival=0.0, prompt=40, generated=1)
    st = state(running=[r_bat, r_int, r_std], free_blocks=0, now=0.52)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert plan.preempt == [3]
    assert {k for k, _ in plan.scheduled} == {1, 2}


def test_new_requests_leave_a_kv_watermark() -> None:
    st = state(waiting_=[waiting(1, "standard", prompt=4000)], free_blocks=200)
    plan = make_policy("slidingserve", roofline(), kv_watermark=0.5).schedule(st)
    # 200 free blocks, half kept free: at most 100 blocks = 1600 tokens admitted
    assert plan.scheduled == [(1, 1600)]


@pytest.mark.parametrize("mode, expected", [
    ("off", [(1, 1600)]),  # the first chunk of the long prompt starts on what is free
    ("skip", [(2, 800)]),  # the long prompt waits; the short one behind it fits whole
    ("stop", []),  # nothing behind the long prompt starts either (vLLM's rule)
])
def test_admitting_only_whole_prompts(mode: str, expected: list) -> None:
    """100 blocks of 16 tokens free: the interactive request's 4,000-token prompt (first in the
    order) does not fit whole, the standard one's 800 tokens do."""
    st = state(waiting_=[waiting(1, "interactive", prompt=4000),
                         waiting(2, "standard", arrival=0.1, prompt=800)],
               free_blocks=100, now=0.2)
    plan = make_policy("slidingserve", roofline(), kv_watermark=0.0,
                       admit_whole_prompt=mode, chunker={"max_chunk": 1600}).schedule(st)
    assert plan.scheduled == expected
    check_plan(st, plan, None)


ABLATIONS = [
    {},
    {"use_sorter": False},
    {"use_aging": False},
    {"use_deferral": False},
    {"use_sliding_chunker": False},
    {"use_batch_constructor": False},
    {"kv_pacer": {"enabled": False}},
    {"chunker": {"safety": 1.2, "granularity": 128}},
    {"chunker": {"ttft_floor": False}},
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(o) or "default")
def test_ablations_plan_validly(overrides: dict) -> None:
    rng = np.random.default_rng(0)
    tiers = ["interactive", "standard", "batch"]
    running = [decoding(i, tiers[i % 3], prompt=int(rng.integers(50, 2000)),
                        generated=int(rng.integers(1, 50))) for i in range(30)]
    running += [prefilling(100 + i, tiers[i % 3], prompt=3000, computed=1000) for i in range(3)]
    queue = [waiting(200 + i, tiers[i % 3], arrival=float(rng.uniform(0, 1)),
                     prompt=int(rng.integers(50, 3000))) for i in range(40)]
    st = state(running=running, waiting_=queue, now=1.0, free_blocks=500, max_num_seqs=48)
    plan = make_policy("slidingserve", roofline(), **overrides).schedule(st)
    check_plan(st, plan, None)
    assert plan.scheduled


def test_config_errors_name_the_nested_field() -> None:
    with pytest.raises(ValueError, match=r"sorter\.aging_s.*-1"):
        make_policy("slidingserve", roofline(), sorter={"aging_s": -1})
    with pytest.raises(ValueError, match=r"chunker\.window"):
        make_policy("slidingserve", roofline(), chunker={"window": 5})


@pytest.mark.parametrize(
    ("name", "overrides"),
    [(name, {}) for name in policy_names()] + [("slidingserve", {"pace_decodes": True})],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else v,
)
def test_every_request_finishes_under_kv_pressure(name: str, overrides: dict) -> None:
    """Conservation: with a KV cache that forces preemptions, every request still finishes."""
    rng = np.random.default_rng(1)
    tiers = ["interactive", "standard", "batch"]
    reqs = [(tiers[i % 3], float(i) * 0.05, int(rng.integers(20, 600)), int(rng.integers(1, 60)))
            for i in range(40)]
    policy = make_policy(name, roofline(), **overrides)
    produced, steps = run_to_completion(policy, reqs, total_blocks=120)
    assert steps < 20_000, f"{name} did not finish"
    assert produced == {k: r[3] for k, r in enumerate(reqs)}



def test_full_cache_still_runs_prefills_inside_held_blocks() -> None:
    # Found on the real engine: every block in use, each running prefill with room left in its
    # last block. The chunk's KV cap used to count free blocks only: chunk 0, an empty plan, and
    # an engine that could never step again.
    running = [prefilling(k, prompt=200, computed=184) for k in range(5)]  # 8 free slots each
    policy = make_policy("slidingserve", roofline())
    s = state(running=running, free_blocks=0, max_batch_tokens=64)
    plan = policy.schedule(s)
    check_plan(s, plan, None)
    assert plan.num_tokens > 0, plan


def test_full_cache_with_full_blocks_preempts_to_make_progress() -> None:
    # Every running prefill has filled its blocks and nothing is free: only preemption helps.
    running = [prefilling(k, prompt=200, computed=192) for k in range(3)]  # 12 full blocks each
    policy = make_policy("slidingserve", roofline())
    s = state(running=running, free_blocks=0, max_batch_tokens=64)
    plan = policy.schedule(s)
    check_plan(s, plan, None)
    assert plan.num_tokens > 0 and plan.preempt, plan


def test_paced_decodes_far_ahead_sit_out_while_prefill_waits() -> None:
    on_pace = decoding(1, "interactive", arrival=0.0, prompt=500, generated=10,
                       first_token_s=0.55)  # next token due at 1.05 s: 50 ms of slack at 1.0
    ahead = decoding(2, "batch", arrival=0.0, prompt=500, generated=40, first_token_s=0.5)
    queue = [waiting(3, "standard", arrival=0.9, prompt=3000)]
    policy = make_policy("slidingserve", roofline(), pace_decodes=True)
    st = state(running=[on_pace, ahead], waiting_=queue, now=1.0)
    plan = policy.schedule(st)
    keys = {k for k, _ in plan.scheduled}
    assert 1 in keys and 2 not in keys and 3 in keys  # 16 s ahead of pace: sits out
    assert next_due(ahead) - st.now_s >= 2 * plan.predicted_s  # still on pace after 2 steps
    check_plan(st, plan, None)
    # without a prefill queue pacing gains nothing: every decode runs
    plan = policy.schedule(state(running=[on_pace, ahead], now=1.0))
    assert {k for k, _ in plan.scheduled} == {1, 2}
    # off by default
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert {1, 2} <= {k for k, _ in plan.scheduled}



def test_a_known_host_time_per_step_shrinks_the_chunk_to_keep_the_slack() -> None:
    """Planning with the host time each step costs (``StepOverhead``), the step still ends
    within the tightest decode slack once that time is counted, so its prefill is smaller."""
    from slidingserve.latency import StepOverhead

    decs = [decoding(i, "interactive", arrival=0.0, prompt=1000, generated=10,
                     first_token_s=0.55 + 0.01 * i) for i in range(20)]
    queue = [waiting(200 + i, "standard", arrival=1.0, prompt=3000) for i in range(5)]
    st = state(running=decs, waiting_=queue, now=1.0)
    tightest = min(next_due(r) for r in decs) - st.now_s
    plain = make_policy("slidingserve", roofline()).schedule(st)
    host = 0.3 * tightest
    aware = make_policy("slidingserve", StepOverhead(roofline(), host)).schedule(st)
    assert 0 < aware.stats["prefill_tokens"] < plain.stats["prefill_tokens"]
    assert aware.predicted_s <= tightest + 1e-12  # the host time included
    assert aware.predicted_s - host < plain.predicted_s
    check_plan(st, aware, None)


def _overrun_state(interactive_slack: float, queued: bool):
    """One interactive decode whose next token is due ``interactive_slack`` from now, beside 40
    `batch` decodes of long contexts (slack 1.1 s each) whose KV reads make the decode-only step
    ~30 ms on the roofline."""
    now = 1.0
    inter = decoding(1, "interactive", prompt=1000, generated=10,
                     first_token_s=now + interactive_slack - 10 * 0.05)
    batch = [decoding(100 + i, "batch", prompt=8000, generated=5, first_token_s=0.1)
             for i in range(40)]
    queue = [waiting(200, "standard", arrival=0.5, prompt=3000)] if queued else []
    return state(running=[inter, *batch], waiting_=queue, now=now)


def test_loose_decodes_sit_out_a_step_that_would_overrun_the_tightest() -> None:
    st = _overrun_state(0.012, queued=True)
    assert next_due(st.running[0]) - st.now_s == pytest.approx(0.012)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    keys = {k for k, _ in plan.scheduled}
    assert 1 in keys and 0 < plan.predicted_s <= 0.012
    out = {r.key for r in st.running} - keys
    assert out and all(k >= 100 for k in out)  # only `batch` decodes sat out
    assert plan.stats["prefill_tokens"] == 0  # a catch-up step: no prefill in the time freed
    check_plan(st, plan, None)
    # off: every decode runs and the step overruns the interactive token's deadline
    off = make_policy("slidingserve", roofline(), fit_decodes=False).schedule(st)
    assert {r.key for r in st.running} <= {k for k, _ in off.scheduled}
    assert off.predicted_s > 0.012


def test_decodes_do_not_sit_out_when_that_cannot_fit_the_step_for_a_lower_tier_or_idle() -> None:
    # 5 ms is below a one-decode step (~10 ms): sitting out would only delay the others
    st = _overrun_state(0.005, queued=True)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert {r.key for r in st.running} <= {k for k, _ in plan.scheduled}
    # the tightest decode is `batch`'s: the long `standard` decodes (a higher tier) stay in
    now = 1.0
    tight = decoding(1, "batch", prompt=1000, generated=10, first_token_s=now + 0.012 - 10 * 0.4)
    std = [decoding(100 + i, "standard", prompt=8000, generated=5, first_token_s=0.1)
           for i in range(40)]
    st = state(running=[tight, *std], waiting_=[waiting(200, "standard", prompt=3000)], now=now)
    assert next_due(tight) - now == pytest.approx(0.012)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert {r.key for r in st.running} <= {k for k, _ in plan.scheduled}
    # nothing waiting: the plan is the fixed "every decode" (Policy.fixed_decode_steps)
    st = _overrun_state(0.012, queued=False)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert sorted(plan.scheduled) == sorted((r.key, 1) for r in st.running)


def _tight_decodes_state(queue_tier: str, ttft_left: float):
    """16 interactive decodes whose next tokens are due in 12 ms (a chunk of tens of tokens fits
    beside them on the roofline), and four 500-token prompts of ``queue_tier`` whose TTFT
    deadlines are ``ttft_left`` away."""
    now = 10.0
    decs = [decoding(i, "interactive", prompt=1000, generated=10,
                     first_token_s=now + 0.012 - 10 * 0.05) for i in range(16)]
    ttft = {"interactive": 6.0, "standard": 600.0, "batch": 1800.0}[queue_tier]
    queue = [waiting(100 + i, queue_tier, arrival=now + ttft_left - ttft, prompt=500)
             for i in range(4)]
    return state(running=decs, waiting_=queue, now=now)


def test_the_chunk_grows_to_keep_queued_first_tokens_of_the_same_tier_on_time() -> None:
    """Decodes whose TPOT leaves room for a few tokens per step would hold the chunk there while
    the queue's first tokens run out of time (``chunker.ttft_floor``): the chunk grows just
    enough to keep them on time, for the decodes' tier or a higher one, never for a lower."""
    st = _tight_decodes_state("interactive", 0.06)
    off = make_policy("slidingserve", roofline(), chunker={"ttft_floor": False}).schedule(st)
    on = make_policy("slidingserve", roofline()).schedule(st)
    assert off.predicted_s <= 0.012 < on.predicted_s  # the decodes' slack gives way
    assert off.stats["chunk"] < on.stats["chunk"] < 2000

    def on_time(plan) -> int:  # first tokens within 60 ms, steps like this one
        c = plan.stats["chunk"]
        return sum(-(-500 * k // c) * plan.predicted_s <= 0.06 for k in range(1, 5))

    assert on_time(on) > on_time(off)
    check_plan(st, on, None)
    # plenty of time left: the slack rule alone decides
    easy = _tight_decodes_state("interactive", 5.0)
    assert make_policy("slidingserve", roofline()).schedule(easy).stats["chunk"] == \
        make_policy("slidingserve", roofline(), chunker={"ttft_floor": False}).schedule(
            easy).stats["chunk"]
    # a lower tier's first tokens do not outrank the interactive decodes' TPOT
    low = _tight_decodes_state("batch", 0.06)
    assert make_policy("slidingserve", roofline()).schedule(low).predicted_s <= 0.012
