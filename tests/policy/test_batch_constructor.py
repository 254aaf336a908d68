"""The knapsack-with-deadlines DP against brute force, and the constructor's reordering."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from slidingserve.policy.batch_constructor import (
    BatchConstructor,
    ConstructorConfig,
    knapsack_with_deadlines,
)


def edd_feasible(cost: np.ndarray, due: np.ndarray, subset: tuple[int, ...]) -> bool:
    t = 0
    for j in sorted(subset, key=lambda j: (due[j], j)):
        t += cost[j]
        if t > due[j]:
            return False
    return True


def brute_force(cost: np.ndarray, due: np.ndarray, value: np.ndarray) -> float:
    best = 0.0
    n = len(cost)
    for k in range(n + 1):
        for subset in itertools.combinations(range(n), k):
            if edd_feasible(cost, due, subset):
                best = max(best, float(sum(value[j] for j in subset)))
    return best


instances = st.integers(1, 8).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 12), min_size=n, max_size=n),
        st.lists(st.integers(0, 40), min_size=n, max_size=n),
        st.lists(st.sampled_from([1.0, 2.0, 4.0, 0.5, 3.0]), min_size=n, max_size=n),
    )
)


@settings(max_examples=300, deadline=None)
@given(instances)
def test_dp_matches_brute_force(inst: tuple[list[int], list[int], list[float]]) -> None:
    cost, due, value = (np.array(x, dtype=np.float64) for x in inst)
    chosen, total = knapsack_with_deadlines(cost, due, value)
    assert abs(total - brute_force(cost, due, value)) < 1e-9
    # the returned set is feasible and worth what the DP says
    assert edd_feasible(cost, due, tuple(np.flatnonzero(chosen)))
    assert abs(float(value[chosen].sum()) - total) < 1e-9


def test_no_risk_keeps_the_order() -> None:
    bc = BatchConstructor(ConstructorConfig())
    order = bc.plan(np.array([0.1, 0.1, 0.1]), np.array([1.0, 2.0, 3.0]), np.ones(3))
    assert order.tolist() == [0, 1, 2]


def test_keeps_the_heavier_request_when_both_cannot_make_it() -> None:
    # two requests of 0.5 s each, both due in 0.6 s: only one can be on time; keep weight 4
    bc = BatchConstructor(ConstructorConfig(resolution_s=0.01))
    order = bc.plan(np.array([0.5, 0.5, 0.2]), np.array([0.6, 0.6, 100.0]),
                    np.array([1.0, 4.0, 2.0]))
    assert order.tolist() == [1, 2, 0]  # kept first, the rest of the queue, the given-up last


def test_prefers_two_cheap_requests_over_one_expensive_of_equal_weight() -> None:
    bc = BatchConstructor(ConstructorConfig(resolution_s=0.01))
    order = bc.plan(np.array([0.8, 0.3, 0.3]), np.array([0.9, 0.9, 0.9]), np.array([2.0, 2.0, 2.0]))
    assert sorted(order[:2].tolist()) == [1, 2] and order[2] == 0


def test_a_higher_tier_is_never_given_up_for_lower_tier_requests() -> None:
    # one interactive request (weight 4, 0.5 s, due in 0.55 s) or three standard ones (weight 2
    # each, 0.15 s, due in 0.5 s): by weight alone the three standard ones win (6 > 4)
    bc = BatchConstructor(ConstructorConfig(resolution_s=0.01))
    svc, due = np.array([0.15, 0.15, 0.15, 0.5]), np.array([0.5, 0.5, 0.5, 0.55])
    weight, priority = np.array([2.0, 2.0, 2.0, 4.0]), np.array([1, 1, 1, 0])
    assert bc.plan(svc, due, weight)[:3].tolist() == [0, 1, 2]
    order = bc.plan(svc, due, weight, priority)
    assert order[0] == 3 and sorted(order[1:].tolist()) == [0, 1, 2]


def test_kept_requests_are_served_tier_by_tier() -> None:
    # both can be on time in deadline order (standard first); given priorities the interactive
    # request goes first, with its deadline order only among its own tier
    bc = BatchConstructor(ConstructorConfig(resolution_s=0.01))
    svc, due, w = np.array([0.1, 0.15, 0.1]), np.array([1.0, 0.2, 0.9]), np.array([4.0, 2.0, 4.0])
    assert bc.plan(svc, due, w).tolist() == [1, 2, 0]
    assert bc.plan(svc, due, w, np.array([0, 1, 0])).tolist() == [2, 0, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 2.0), st.floats(-1.0, 19.0), st.integers(0, 3)),
                min_size=1, max_size=7))
def test_with_priorities_the_kept_set_is_best_tier_by_tier_and_served_tier_by_tier(
        items: list[tuple[float, float, int]]) -> None:
    """Brute force over the window: no feasible set keeps more of a higher tier (tier by tier
    from the top) than the kept one, and the kept requests come out sorted by priority."""
    svc, due = (np.array([x[i] for x in items], dtype=np.float64) for i in range(2))
    pr = np.array([x[2] for x in items])
    w = 4.0 - pr  # one weight per tier, as tier sets give them
    n = len(items)  # one more request, due far away, marks where the kept ones end
    svc, due, w, pr = np.append(svc, 0.01), np.append(due, 1e3), np.append(w, 1.0), np.append(pr, 0)
    bc = BatchConstructor(ConstructorConfig(resolution_s=0.01, max_units=4096))
    order = bc.reorder(svc, due, w, pr)
    if order is None:
        return
    kept = order[: order.tolist().index(n)].tolist()
    assert [pr[j] for j in kept] == sorted(pr[j] for j in kept)
    q = max(bc.config.resolution_s, bc.config.horizon_s / bc.config.max_units)
    cost, dd = np.maximum(np.ceil(svc / q), 1.0), np.floor(np.maximum(due, 0.0) / q)
    assert edd_feasible(cost, dd, tuple(kept))
    tiers = sorted(set(pr[:n].tolist()))

    def profile(subset: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sum(1 for j in subset if pr[j] == p) for p in tiers)

    best = max(profile(c) for k in range(n + 1) for c in itertools.combinations(range(n), k)
               if edd_feasible(cost, dd, c))
    assert profile(tuple(kept)) == best


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 2.0), st.floats(-1.0, 30.0), st.floats(0.5, 4.0)),
                min_size=0, max_size=30))
def test_plan_is_a_permutation(items: list[tuple[float, float, float]]) -> None:
    svc, due, w = (np.array([x[i] for x in items], dtype=np.float64) for i in range(3))
    order = BatchConstructor(ConstructorConfig(max_items=10)).plan(svc, due, w)
    assert sorted(order.tolist()) == list(range(len(items)))


@settings(max_examples=200, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(-2.0, 30.0)), max_size=12),
    max_items=st.integers(1, 6),
)
def test_quick_risk_check_agrees_with_reorder(
    jobs: list[tuple[float, float]], max_items: int
) -> None:
    """``any_at_risk`` (plain Python) is False exactly when ``reorder`` keeps the order."""
    c = BatchConstructor(ConstructorConfig(horizon_s=20.0, max_items=max_items))
    service = np.array([s for s, _ in jobs])
    target = np.array([d for _, d in jobs])
    unchanged = c.reorder(service, target, np.ones(len(jobs))) is None
    assert c.any_at_risk(service.tolist(), target.tolist()) is not unchanged
