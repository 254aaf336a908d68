"""An interactive request overtakes running batch work when sequence slots or KV run out."""

from __future__ import annotations

from policy_factories import decoding, roofline, run_to_completion, state, waiting
from test_plan_validity import check_plan

from slidingserve.policy import make_policy


def batch_decodes(n: int) -> list:
    return [decoding(i, "batch", prompt=64, generated=10) for i in range(n)]


def test_interactive_takes_kv_from_running_batch() -> None:
    st = state(running=batch_decodes(8), waiting_=[waiting(99, "interactive", 1.0, prompt=64)],
               now=1.0, free_blocks=0)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert (99, 64) in plan.scheduled  # its whole prompt runs this step
    assert plan.preempt == [7]  # one batch request gives its blocks, the rest keep decoding
    assert len(plan.scheduled) == 8
    check_plan(st, plan, None)


def test_interactive_takes_a_sequence_slot_from_running_batch() -> None:
    st = state(running=batch_decodes(8), waiting_=[waiting(99, "interactive", 1.0, prompt=64)],
               now=1.0, max_num_seqs=8)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert (99, 64) in plan.scheduled and len(plan.preempt) == 1
    check_plan(st, plan, None)


def test_the_victim_is_the_running_request_with_the_least_to_recompute() -> None:
    """A sequence slot costs the same from any batch request; the one with the fewest computed
    tokens gives it at the least recomputation, wherever it stands in the order."""
    running = [decoding(i, "batch", prompt=32 if i == 3 else 512, generated=10) for i in range(8)]
    st = state(running=running, waiting_=[waiting(99, "interactive", 1.0, prompt=64)], now=1.0,
               max_num_seqs=8)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert plan.preempt == [3] and (99, 64) in plan.scheduled
    check_plan(st, plan, None)


def test_same_tier_and_lower_tiers_do_not_overtake() -> None:
    for tier in ("batch", "standard"):
        running = [decoding(i, tier, prompt=64, generated=10) for i in range(8)]
        st = state(running=running, waiting_=[waiting(99, "batch", 1.0, prompt=64)], now=1.0,
                   max_num_seqs=8)
        plan = make_policy("slidingserve", roofline()).schedule(st)
        assert plan.preempt == [] and 99 not in {k for k, _ in plan.scheduled}, tier


def test_a_higher_tier_running_request_is_never_the_victim() -> None:
    running = [decoding(1, "interactive", prompt=64, generated=5, first_token_s=0.5),
               decoding(2, "interactive", prompt=64, generated=5, first_token_s=0.5)]
    st = state(running=running, waiting_=[waiting(99, "interactive", 1.0, prompt=64)], now=1.0,
               max_num_seqs=2)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert plan.preempt == []


def test_off_switch_keeps_the_old_behaviour() -> None:
    st = state(running=batch_decodes(8), waiting_=[waiting(99, "interactive", 1.0, prompt=64)],
               now=1.0, max_num_seqs=8)
    plan = make_policy("slidingserve", roofline(), overtake=False).schedule(st)
    assert plan.preempt == [] and 99 not in {k for k, _ in plan.scheduled}


def first_scheduled_step(overtake: bool) -> tuple[dict[int, int], dict[int, int]]:
    """A host run: 16 long batch requests fill the slots; 4 interactive ones arrive later.
    Returns tokens produced per key and the step each interactive request first ran."""
    reqs = [("batch", 0.0, 64, 200) for _ in range(16)]
    reqs += [("interactive", 0.2 + 0.1 * k, 64, 8) for k in range(4)]
    policy = make_policy("slidingserve", roofline(), overtake=overtake)
    first: dict[int, int] = {}
    schedule = policy.schedule

    def recording(st):
        plan = schedule(st)
        for key, _ in plan.scheduled:
            if key >= 16:
                first.setdefault(key, len(calls))
        calls.append(1)
        return plan

    calls: list[int] = []
    policy.schedule = recording
    produced, _ = run_to_completion(policy, reqs, total_blocks=400, max_num_seqs=16)
    assert produced == {k: n for k, (_, _, _, n) in enumerate(reqs)}  # nothing lost, no livelock
    return produced, first


def test_under_pressure_interactive_starts_at_once_and_everyone_finishes() -> None:
    _, fast = first_scheduled_step(overtake=True)
    _, slow = first_scheduled_step(overtake=False)
    assert max(fast.values()) < min(slow.values())  # all four start before any did without it


def test_tiers_with_an_end_to_end_deadline_can_be_kept_from_overtaking() -> None:
    """A ``standard`` request near its deadline (50 s of its 600 s left), on an engine full of
    batch decodes, takes a seat with ``overtake_e2e_tiers`` on; with it off (the default) it
    waits, while an interactive request still overtakes."""
    for tier, flag, overtakes in (("standard", True, True), ("standard", False, False),
                                  ("interactive", False, True)):
        arrival = 50.0 if tier == "standard" else 599.0
        st = state(running=batch_decodes(8), waiting_=[waiting(99, tier, arrival, prompt=64)],
                   now=600.0, max_num_seqs=8)
        plan = make_policy("slidingserve", roofline(), overtake_e2e_tiers=flag).schedule(st)
        if not flag:  # the default
            assert plan == make_policy("slidingserve", roofline()).schedule(st)
        assert bool(plan.preempt) == overtakes, (tier, flag)
        assert (99 in {k for k, _ in plan.scheduled}) == overtakes, (tier, flag)
        check_plan(st, plan, None)
