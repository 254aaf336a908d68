"""The host checks every plan, shows no output length, and calls forget; routers; stalls."""

from __future__ import annotations

import pytest
from sim_factories import ScriptedPolicy, small_workload, specs_of, tiers

from slidingserve.policy import StepPlan
from slidingserve.sim import PlanError, SimConfig, SimulationStalled, router_names, simulate


def _run(plans, rows, **cfg):
    policy_holder: list[ScriptedPolicy] = []

    def factory(lat):
        policy_holder.append(ScriptedPolicy(lat, list(plans)))
        return policy_holder[-1]

    result = simulate(specs_of(rows), tiers(), factory, SimConfig(**cfg))
    return result, policy_holder[0]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (StepPlan(scheduled=[(7, 10)]), "key 7"),
        (StepPlan(scheduled=[(0, 0)]), "0 tokens scheduled"),
        (StepPlan(scheduled=[(0, 101)]), "101 tokens scheduled, 100 pending"),
        (StepPlan(scheduled=[(0, 10), (0, 10)]), "appears twice"),
        (StepPlan(preempt=[0]), "holds no KV"),
        (StepPlan(scheduled=[(0, 100), (1, 100)]), "max_batch_tokens"),
    ],
)
def test_bad_plans_raise_naming_the_problem(plan, message):
    rows = [(0.0, 100, 5, "standard"), (0.0, 100, 5, "standard")]
    with pytest.raises(PlanError, match=message):
        _run([plan], rows, max_batch_tokens=150)


def test_kv_over_allocation_raises():
    rows = [(0.0, 100, 5, "standard"), (0.0, 100, 5, "standard")]
    with pytest.raises(PlanError, match="KV over-allocation at request 1"):
        _run([StepPlan(scheduled=[(0, 100), (1, 100)])], rows, num_blocks=10)


def test_too_many_sequences_raise():
    rows = [(0.0, 10, 5, "standard")] * 3
    with pytest.raises(PlanError, match="max_num_seqs 2"):
        _run([StepPlan(scheduled=[(0, 1), (1, 1), (2, 1)])], rows, max_num_seqs=2)


def test_policy_sees_no_output_length_and_host_applies_chunks_and_preemption():
    rows = [(0.0, 40, 3, "interactive")]
    plans = [
        StepPlan(scheduled=[(0, 16)]),
        StepPlan(scheduled=[(0, 8)]),
        StepPlan(preempt=[0]),  # back to waiting, recompute from scratch
        StepPlan(scheduled=[(0, 40)]),  # whole prompt: emits token 1
        StepPlan(scheduled=[(0, 1)]),
        StepPlan(scheduled=[(0, 1)]),
    ]
    result, policy = _run(plans, rows, fast_forward=False)
    seen = policy.inputs
    assert not hasattr(seen[0].waiting[0], "output_len")
    assert [len(s.waiting) for s in seen[:4]] == [1, 0, 0, 1]
    assert seen[1].running[0].num_computed == 16 and seen[1].running[0].num_blocks == 1
    assert seen[2].running[0].num_computed == 24 and seen[2].running[0].num_blocks == 2
    assert seen[3].waiting[0].num_computed == 0 and seen[3].waiting[0].num_preemptions == 1
    assert seen[4].running[0].num_generated == 1 and seen[4].running[0].first_token_s is not None
    rec = result.records[0]
    assert rec.finished and rec.n_out == 3 and rec.num_preemptions == 1
    assert result.stats["tokens_run"] == 16 + 8 + 40 + 1 + 1


def test_forget_is_called_once_per_finished_request():
    forgotten: list[int] = []

    from slidingserve.policy import make_policy

    def factory(lat):
        policy = make_policy("vllm-fcfs", lat)
        original = policy.forget

        def forget(key: int) -> None:
            forgotten.append(key)
            original(key)

        policy.forget = forget  # type: ignore[method-assign]
        return policy

    specs = small_workload(30)
    simulate(specs, tiers(), factory)
    assert sorted(forgotten) == [s.key for s in specs]


def test_empty_plans_with_work_left_stall_with_a_message():
    with pytest.raises(SimulationStalled, match="scheduled nothing"):
        _run([], [(0.0, 10, 5, "standard")])


@pytest.mark.parametrize("router", router_names())
def test_every_router_completes_on_three_replicas(router):
    specs = small_workload(60, rate=60.0)
    result = simulate(specs, tiers(), "vllm-fcfs", SimConfig(replicas=3, router=router))
    assert all(r.finished for r in result.records)


def test_round_robin_and_least_loaded_spread_requests():
    specs = specs_of([(0.001 * i, 200, 50, "standard") for i in range(9)])
    for router in ("round-robin", "least-loaded", "slo-aware"):
        result = simulate(specs, tiers(), "vllm-fcfs", SimConfig(replicas=3, router=router))
        # With 3 idle replicas, three simultaneous arrivals must not share a replica: the
        # first token of the first three comes after one prefill step each.
        ttfts = sorted(r.first_token_s - r.arrival_s for r in result.records[:3])
        assert ttfts[-1] < 2 * ttfts[0], router


def test_unknown_router_is_named():
    with pytest.raises(ValueError, match="unknown router 'nearest'"):
        simulate(small_workload(2), tiers(), "vllm-fcfs", SimConfig(router="nearest"))


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="unknown policy 'fifo'"):
        simulate(small_workload(2), tiers(), "fifo")
