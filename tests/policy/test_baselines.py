"""Each fixed-budget baseline's characteristic behaviour on a hand-built case."""

from policy_factories import decoding, prefilling, roofline, state, waiting

from slidingserve.policy import make_policy


def test_vllm_priority_admits_by_tier_and_preempts_least_important():
    st = state(
        waiting_=[
            waiting(1, "batch", arrival=0.0, prompt=100),
            waiting(2, "interactive", arrival=5.0, prompt=100),
            waiting(3, "standard", arrival=1.0, prompt=100),
        ]
    )
    plan = make_policy("vllm-priority", roofline(), budget=4096).schedule(st)
    assert [k for k, _ in plan.scheduled] == [2, 3, 1]

    # the interactive request is last in running order but the batch one is preempted
    r_batch = decoding(1, "batch", arrival=0.0, prompt=40)
    r_std = decoding(2, "standard", arrival=1.0, prompt=40)
    r_int = decoding(3, "interactive", arrival=2.0, prompt=16)  # needs a new block
    st = state(running=[r_batch, r_std, r_int], free_blocks=0)
    plan = make_policy("vllm-priority", roofline()).schedule(st)
    assert plan.preempt == [1]
    assert sorted(k for k, _ in plan.scheduled) == [2, 3]
    assert make_policy("vllm-fcfs", roofline()).schedule(st).preempt == [3]


def test_sarathi_decodes_before_running_prefill():
    st = state(running=[prefilling(1, prompt=5000, computed=512), decoding(2), decoding(3)])
    sar = make_policy("sarathi", roofline(), budget=512).schedule(st)
    assert sar.scheduled == [(2, 1), (3, 1), (1, 510)]
    fcfs = make_policy("vllm-fcfs", roofline(), budget=512).schedule(st)
    assert fcfs.scheduled == [(1, 512)]  # vLLM's running order lets the prefill stall decodes
    assert make_policy("sarathi", roofline(), budget=512).token_budget == 512


def test_edf_serves_earliest_deadline_first_and_skips_what_does_not_fit():
    late = waiting(1, "batch", arrival=0.0, prompt=300)  # due at 1800 s
    soon = waiting(2, "interactive", arrival=10.0, prompt=300)  # due at 16 s
    mid = waiting(3, "standard", arrival=5.0, prompt=300)  # due at 605 s
    plan = make_policy("edf", roofline(), budget=512).schedule(state(waiting_=[late, soon, mid]))
    assert plan.scheduled == [(2, 300), (3, 212)]
    big = waiting(4, "interactive", arrival=0.0, prompt=2000)  # needs 125 blocks
    small = waiting(5, "batch", arrival=0.0, prompt=100)
    plan = make_policy("edf", roofline(), budget=512).schedule(
        state(waiting_=[big, small], free_blocks=10)
    )
    # EDF gives the earliest deadline what KV allows (10 blocks); nothing is left for the next
    assert plan.scheduled == [(4, 160)]


def test_bad_budget_is_rejected_with_field_and_value():
    import pytest

    with pytest.raises(ValueError, match=r"budget.*-5"):
        make_policy("sarathi", roofline(), budget=-5)


def test_qoserve_chunk_is_the_largest_grid_total_within_slack_over_safety():
    from slidingserve.latency.features import decode_features, with_prefill_chunks

    decs = [decoding(i, "interactive", arrival=0.0, prompt=1000, generated=10,
                     first_token_s=0.55) for i in range(100)]
    st = state(running=decs, waiting_=[waiting(500, "standard", arrival=1.0, prompt=5000)],
               now=1.0)
    plan = make_policy("qoserve", roofline()).schedule(st)
    slack = 0.55 + 10 * 0.05 - 1.0
    grid = [128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048]
    base = decode_features([r.num_computed + 1 for r in decs])
    import numpy as np

    t = roofline().predict_features(with_prefill_chunks(base, np.array(grid) - 100.0, 0))
    best = max(g for g, ti in zip(grid, t, strict=True) if ti * 1.2 <= slack)
    assert dict(plan.scheduled)[500] == best - 100
    assert plan.predicted_s * 1.2 <= slack


def test_qoserve_relegates_hopeless_requests_but_still_serves_them():
    pol = make_policy("qoserve", roofline())
    # arrived 5.99 s ago with 8000 tokens to prefill: cannot make its 6 s TTFT -> relegated
    hopeless = waiting(1, "interactive", arrival=0.0, prompt=8000)
    fresh = waiting(2, "batch", arrival=5.9, prompt=100)
    plan = pol.schedule(state(waiting_=[hopeless, fresh], now=5.99))
    assert [k for k, _ in plan.scheduled][:1] == [2]  # the batch request now goes first
    assert 1 in dict(plan.scheduled)  # ...but the relegated one still gets the rest
    plan = pol.schedule(state(waiting_=[hopeless], now=6.5))
    assert plan.scheduled and plan.scheduled[0][0] == 1  # alone, it is served


def test_qoserve_late_decode_does_not_pin_the_chunk_unless_asked():
    on_pace = [decoding(i, "interactive", arrival=0.0, prompt=500, generated=10,
                        first_token_s=0.6) for i in range(20)]
    resumed = decoding(99, "interactive", arrival=0.0, prompt=500, generated=10,
                       first_token_s=-5.0)  # its paced deadlines passed long ago
    st = state(running=[*on_pace, resumed], waiting_=[waiting(500, "standard", prompt=5000)],
               now=1.0)
    tolerant = make_policy("qoserve", roofline()).schedule(st)
    strict = make_policy("qoserve", roofline(), late_tolerance_s=None).schedule(st)
    assert dict(tolerant.scheduled).get(500, 0) > dict(strict.scheduled).get(500, 0)
    assert dict(strict.scheduled)[500] == 128 - 21  # the smallest grid total, less the decodes
