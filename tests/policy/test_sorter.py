"""MultiLevelPrioritySorter: tier order, feasibility, urgency, remaining work, aging bound."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_factories import prefilling, roofline, state, waiting

from slidingserve.policy import make_policy
from slidingserve.policy.sorter import STARVING, MultiLevelPrioritySorter, SorterConfig
from slidingserve.slo import SLOTier


def sort(sorter, due, service, prio, arrival, remaining, now=0.0):
    n = len(due)
    return sorter.plan(now, np.array(due, float), np.array(service, float),
                       np.array(prio, float), np.array(arrival, float),
                       np.array(remaining, float), np.zeros(n, bool), np.zeros(n))


def test_orders_tiers_then_urgency_then_remaining_prefill() -> None:
    s = MultiLevelPrioritySorter(SorterConfig())
    order, late = sort(s, due=[100, 50, 6, 7, 7], service=[0.1] * 5, prio=[2, 1, 0, 0, 0],
                       arrival=[0] * 5, remaining=[10, 10, 10, 900, 100])
    assert order.tolist() == [2, 4, 3, 1, 0]
    assert not late.any()


def test_requests_that_cannot_make_it_go_after_all_that_can() -> None:
    s = MultiLevelPrioritySorter(SorterConfig())
    # the interactive request (tier 0) needs 3 s of service but has 2 s: it goes last
    order, late = sort(s, due=[2.0, 500.0], service=[3.0, 1.0], prio=[0, 2], arrival=[0, 0],
                       remaining=[10, 10])
    assert order.tolist() == [1, 0] and late.tolist() == [True, False]
    off = MultiLevelPrioritySorter(SorterConfig(use_feasibility=False))
    assert sort(off, [2.0, 500.0], [3.0, 1.0], [0, 2], [0, 0], [10, 10])[0].tolist() == [0, 1]


@settings(deadline=None)
@given(prio=st.integers(0, 5), waited=st.floats(0.0, 10_000.0), aging=st.floats(1.0, 500.0))
def test_aging_levels(prio: int, waited: float, aging: float) -> None:
    s = MultiLevelPrioritySorter(SorterConfig(aging_s=aging))
    level = s.protection_level(np.array([float(prio)]), np.array([waited]), np.array([False]))[0]
    if waited >= (prio + 1) * aging:
        assert level == STARVING
    else:
        assert level == max(prio - int(waited // aging), 0) <= prio
    decoding = s.protection_level(np.array([float(prio)]), np.array([waited]), np.array([True]))
    assert decoding[0] == prio  # running decodes are not aged


def test_starving_requests_go_first_in_arrival_order() -> None:
    s = MultiLevelPrioritySorter(SorterConfig(aging_s=10.0))
    # now = 100: the batch request (prio 2) arrived at 0 (starving), the standard one at 75
    # (starving: waited 25 >= 20), the interactive one just now
    order, _ = sort(s, due=[1800, 600, 106], service=[0.1] * 3, prio=[2, 1, 0],
                    arrival=[0, 75, 100], remaining=[10] * 3, now=100.0)
    assert order.tolist() == [0, 1, 2]


def test_a_starving_request_past_its_deadline_does_not_go_ahead_of_work_on_time() -> None:
    """Aging must not turn a lost SLO into more lost ones: at now = 2000 the standard request
    (arrived at 0, deadline 600) starves but cannot make it; it goes after the interactive
    request that can, and first among those that cannot (an older infeasible batch request
    that does not starve yet comes after it)."""
    s = MultiLevelPrioritySorter(SorterConfig(aging_s=600.0))
    order, late = sort(s, due=[600.0, 2004.0, 1990.0], service=[0.5, 0.5, 0.5],
                       prio=[1, 0, 2], arrival=[0.0, 1999.0, 300.0], remaining=[10] * 3,
                       now=2000.0)
    assert order.tolist() == [1, 0, 2]
    assert late.tolist() == [True, False, True]


def first_served(use_aging: bool, aging_s: float = 1.0, horizon_s: float = 10.0) -> float | None:
    """One seat per step, a fresh interactive request every step: when does batch get in?"""
    pol = make_policy("slidingserve", roofline(), use_aging=use_aging,
                      sorter={"aging_s": aging_s})
    batch = waiting(0, "batch", arrival=0.0, prompt=100)
    now, key = 0.0, 1
    while now <= horizon_s:
        fresh = waiting(key, "interactive", arrival=now, prompt=100)
        plan = pol.schedule(state(waiting_=[fresh, batch], now=now, max_num_seqs=1))
        if plan.scheduled[0][0] == 0:
            return now
        now, key = now + 0.1, key + 1
    return None


def test_aging_bounds_the_wait() -> None:
    assert first_served(use_aging=False) is None  # starves behind the interactive stream
    served = first_served(use_aging=True, aging_s=1.0)
    # batch has priority 2: starving after (2 + 1) * aging_s = 3 s, then served first
    assert served is not None and 3.0 - 1e-9 <= served <= 3.0 + 0.1 + 1e-9


def test_roomy_end_to_end_requests_are_deferred_shortest_first() -> None:
    s = MultiLevelPrioritySorter(SorterConfig(defer_frac=0.1))
    # standard (TTFT/e2e 600 s) due in 500 s with 5000 tokens left, batch (1800 s) due in 300 s
    # with 100 left: both roomy (slack > 0.1 x TTFT), so after the urgent ones, shortest first;
    # batch due in 30 s (< 180 s: urgent); interactive due in 5 s (no e2e: never deferred)
    due, ttft = np.array([500.0, 300, 30, 5]), np.array([600.0, 1800, 1800, 6])
    e2e = np.array([True, True, True, False])
    args = (0.0, due, np.full(4, 0.1), np.array([1.0, 2, 2, 0]), np.zeros(4),
            np.array([5000.0, 100, 10, 10]), np.zeros(4, dtype=bool), np.zeros(4))
    order, _ = s.plan(*args, ttft, e2e)
    assert order.tolist() == [3, 2, 1, 0]
    # off: tier priority separates all (interactive, standard, then the batch pair by slack)
    off = MultiLevelPrioritySorter(SorterConfig(defer_frac=None, urgency_step=0.0))
    assert off.plan(*args, ttft, e2e)[0].tolist() == [3, 0, 2, 1]
    # an interactive request with lots of slack is not deferred
    roomy_interactive = np.array([5.9, 300, 30, 500])
    order, _ = s.plan(0.0, roomy_interactive, *args[2:], np.array([6.0, 1800, 1800, 6]),
                      np.array([True, True, True, False]))
    assert order.tolist().index(3) < order.tolist().index(1)


def test_infeasible_end_to_end_requests_go_shortest_first_interactive_ones_by_slack() -> None:
    s = MultiLevelPrioritySorter(SorterConfig())
    # four standard requests (TTFT = e2e 15 s) all past their planning target: most overdue
    # first would be 0, 1, 2, 3; the shortest prefill first is 3, 1, 0, 2. Two interactive
    # requests past their TTFT deadline (no e2e target) keep the order by slack (4, the more
    # overdue, then 5, although 5 has less prefill), ahead of standard (level 1: tier).
    due = np.array([-9.0, -6.0, -3.0, -1.0, -4.0, -2.0])
    ttft = np.array([15.0, 15.0, 15.0, 15.0, 2.0, 2.0])
    e2e = np.array([True, True, True, True, False, False])
    args = (0.0, due, np.full(6, 0.1), np.array([1.0, 1, 1, 1, 0, 0]), np.zeros(6),
            np.array([800.0, 300, 900, 100, 5000, 50]), np.zeros(6, dtype=bool), np.zeros(6))
    order, late = s.plan(*args, ttft, e2e)
    assert late.all()
    assert order.tolist() == [4, 5, 3, 1, 0, 2]
    off = MultiLevelPrioritySorter(SorterConfig(shortest_when_infeasible=False))
    assert off.plan(*args, ttft, e2e)[0].tolist() == [4, 5, 0, 1, 2, 3]


def test_urgency_step_lets_less_remaining_prefill_go_first_among_equally_urgent() -> None:
    args = dict(due=[100.0, 110.0], service=[0.0, 0.0], prio=[1, 1], arrival=[0, 0],
                remaining=[5000, 100])
    exact = MultiLevelPrioritySorter(SorterConfig())
    assert sort(exact, **args)[0].tolist() == [0, 1]  # earlier deadline first
    stepped = MultiLevelPrioritySorter(SorterConfig(urgency_step=0.05))
    n = 2
    order, _ = stepped.plan(0.0, np.array(args["due"]), np.zeros(n), np.ones(n), np.zeros(n),
                            np.array(args["remaining"], float), np.zeros(n, bool), np.zeros(n),
                            np.full(n, 600.0))
    assert order.tolist() == [1, 0]  # same 30 s urgency step: the shorter prefill first


def test_decode_reserve_moves_only_the_end_to_end_bound() -> None:
    s = MultiLevelPrioritySorter(SorterConfig(slack_margin_s=30.0))
    # TTFT 10 s, e2e 120 s: the TTFT deadline (10) is well before e2e - 30 (90): no reserve;
    # TTFT 594 s, e2e 600 s: the target is e2e - 30 = 570, so 24 s are kept;
    # TTFT = e2e = 600 s: the full 30 s; no e2e target, or past the first token: none.
    due = np.array([10.0, 594.0, 600.0, 6.0, 600.0])
    e2e_due = np.array([120.0, 600.0, 600.0, np.inf, 600.0])
    first = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    assert s.decode_reserve(due, e2e_due, first).tolist() == [0.0, 24.0, 30.0, 0.0, 0.0]


def test_decode_reserve_is_at_most_half_a_short_end_to_end_target() -> None:
    s = MultiLevelPrioritySorter(SorterConfig(slack_margin_s=30.0, slack_margin_frac=0.5))
    # TTFT = e2e = 15 s: 7.5 s kept, not 30 (which would make the request infeasible on
    # arrival); TTFT = e2e = 600 s: the full 30 s; no end-to-end target: none
    due, e2e = np.array([15.0, 600.0, 6.0]), np.array([15.0, 600.0, np.inf])
    first = np.array([1.0, 1.0, 0.0])
    assert s.decode_reserve(due, e2e, first, e2e).tolist() == [7.5, 30.0, 0.0]
    assert s.decode_reserve(due, e2e, first).tolist() == [30.0, 30.0, 0.0]  # the margin alone


def test_a_tier_with_a_short_ttft_and_an_e2e_target_is_not_sent_behind_batch() -> None:
    """A tier whose TTFT target (10 s) is under the decode reserve (30 s) is feasible on arrival
    and goes before a lower tier's request, not behind it as infeasible."""
    tight = SLOTier("standard", ttft_s=10.0, tpot_s=0.1, e2e_s=120.0, weight=2.0, priority=1,
                    share=0.5)
    batch = SLOTier("batch", ttft_s=300.0, tpot_s=0.4, e2e_s=600.0, weight=1.0, priority=2,
                    share=0.5)
    st = state(waiting_=[replace(waiting(1, prompt=2000), tier=batch),
                         replace(waiting(2, prompt=2000), tier=tight)], now=5.0)
    policy = make_policy("slidingserve", roofline(), chunker={"max_chunk": 2000},
                         sorter={"defer_frac": None})
    assert policy.schedule(st).scheduled[0][0] == 2


def test_a_started_prefill_ages_like_the_requests_still_waiting() -> None:
    """At now = 1700 two batch requests (arrived at 0 and 10) have aged two levels, to the
    interactive level. The one whose prefill started (it holds KV) must keep that level: it
    goes first (less remaining prefill) and gets its whole remainder this step. Were requests
    holding KV exempt from aging, it would fall back to level 2, behind the waiting one, and
    be left half-prefilled with its blocks held."""
    started = prefilling(1, "batch", arrival=0.0, prompt=4000, computed=1024)
    st = state(running=[started], waiting_=[waiting(2, "batch", 10.0, prompt=4000)], now=1700.0,
               max_batch_tokens=4096)
    plan = make_policy("slidingserve", roofline()).schedule(st)
    assert plan.scheduled[0] == (1, 2976)
    assert dict(plan.scheduled)[2] < 4000
