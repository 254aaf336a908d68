from policy_factories import decoding, prefilling, roofline, state, waiting

from slidingserve.policy import make_policy


def test_running_first_then_fcfs_chunked():
    pol = make_policy("vllm-fcfs", roofline(), budget=512)
    st = state(
        running=[decoding(1), decoding(2), prefilling(3, prompt=1000, computed=256)],
        waiting_=[waiting(5, arrival=2.0, prompt=300), waiting(4, arrival=1.0, prompt=400)],
    )
    plan = pol.schedule(st)
    # decodes 1 token each, the running prefill takes the rest of its budget share, then FCFS
    assert plan.scheduled == [(1, 1), (2, 1), (3, 510)]
    assert plan.preempt == []
    pol2 = make_policy("vllm-fcfs", roofline(), budget=2048)
    plan2 = pol2.schedule(st)
    assert plan2.scheduled == [(1, 1), (2, 1), (3, 744), (4, 400), (5, 300)]
    assert plan2.predicted_s > 0


def test_preempts_last_running_when_kv_short_and_stops_admission():
    # request 1 needs a new block for its next token; none are free -> the last running goes
    r1 = decoding(1, prompt=16, generated=1)  # computed 16 = 1 full block; next token needs block 2
    r2 = decoding(2, prompt=40, generated=1)
    r3 = decoding(3, prompt=40, generated=1)
    st = state(running=[r1, r2, r3], waiting_=[waiting(9, prompt=10)], free_blocks=0)
    plan = make_policy("vllm-fcfs", roofline()).schedule(st)
    assert plan.preempt == [3]
    assert plan.scheduled == [(1, 1), (2, 1)]  # 9 is not admitted in a step that preempted


def test_waiting_admission_stops_at_first_that_does_not_fit():
    st = state(
        waiting_=[
            waiting(1, arrival=0.0, prompt=100),
            waiting(2, arrival=1.0, prompt=1000),
            waiting(3, arrival=2.0, prompt=10),
        ],
        free_blocks=20,
    )
    plan = make_policy("vllm-fcfs", roofline(), budget=4096).schedule(st)
    assert plan.scheduled == [(1, 100)]  # 2 needs 63 blocks; FCFS does not let 3 jump ahead


def test_admission_needs_the_whole_sequence_to_fit_though_only_a_chunk_runs():
    # Block size 16 (policy_factories): a 400-token prompt needs 25 blocks for its whole
    # sequence; with 20 free its first 256-token chunk (16 blocks) would fit, but vLLM's
    # scheduler_reserve_full_isl admits it only once all 25 are free.
    st = state(waiting_=[waiting(1, prompt=400)], free_blocks=20)
    for name in ("vllm-fcfs", "vllm-priority", "sarathi"):
        assert make_policy(name, roofline(), budget=256).schedule(st).scheduled == []
    roomy = state(waiting_=[waiting(1, prompt=400)], free_blocks=25)
    for name in ("vllm-fcfs", "vllm-priority", "sarathi"):
        assert make_policy(name, roofline(), budget=256).schedule(roomy).scheduled == [(1, 256)]
