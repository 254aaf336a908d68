"""The published QoServe configurations: banked decode deadlines, decodes-first, qoserve-paper."""

from __future__ import annotations

import dataclasses

import pytest
from policy_factories import decoding, prefilling, roofline, state, waiting

from slidingserve.capacity.protocol import qoserve_tiers
from slidingserve.latency import load_latency_model
from slidingserve.policy import RequestView, make_policy
from slidingserve.policy.deadlines import next_due
from slidingserve.policy.qoserve import PAPER_CONFIG
from slidingserve.policy.table import TableBuilder

QT = qoserve_tiers()


def with_tier(v: RequestView, name: str) -> RequestView:
    return dataclasses.replace(v, tier=QT[name])


def test_banked_deadlines_follow_the_public_code() -> None:
    # _get_TBT_deadline: arrival + max(actual TTFT, TTFT target) + threshold x (generated + 1)
    early = with_tier(decoding(1, arrival=10.0, generated=3, first_token_s=12.0), "interactive")
    assert next_due(early) == pytest.approx(10.0 + 6.0 + 0.055 * 4)
    late = with_tier(decoding(2, arrival=10.0, generated=3, first_token_s=19.0), "interactive")
    assert next_due(late) == pytest.approx(19.0 + 0.055 * 4)
    std = with_tier(decoding(3, arrival=0.0, generated=1, first_token_s=5.0), "standard")
    assert QT["standard"].ttft_s == pytest.approx(600 - 15 * 0.4)  # the public code's target
    assert next_due(std) == pytest.approx(min(594.0 + 0.4 * 2, 600.0))
    # the planners' table writes the same deadline out
    table = TableBuilder().build([early, late, std], [])
    assert table.next_due().tolist() == pytest.approx([next_due(v) for v in (early, late, std)])


def test_decodes_first_takes_decodes_most_slack_first_then_prefills_in_order() -> None:
    fcfs = make_policy("decodes-first", roofline(), budget=4)
    tight = with_tier(decoding(1, arrival=0.0, generated=2, first_token_s=0.5), "interactive")
    lax = with_tier(decoding(2, arrival=0.0, generated=2, first_token_s=0.5), "batch")
    old = with_tier(waiting(3, arrival=1.0, prompt=50), "batch")
    new = with_tier(waiting(4, arrival=2.0, prompt=50), "interactive")
    plan = fcfs.schedule(state([tight, lax], [new, old], now=3.0))
    # (0, -slack): the batch decode (most slack) first; then FCFS fills the 2 tokens left
    assert plan.scheduled == [(2, 1), (1, 1), (3, 2)]
    edf = make_policy("decodes-first", roofline(), budget=4, order="edf")
    plan = edf.schedule(state([tight, lax], [new, old], now=3.0))
    assert plan.scheduled[2] == (4, 2)  # TTFT deadline 8 s before the batch tier's 1794 s
    # only 1 token of budget: the decode with the most slack gets it, as in the public code
    one = make_policy("decodes-first", roofline(), budget=1)
    assert one.schedule(state([tight, lax], [], now=3.0)).scheduled == [(2, 1)]


def test_decodes_first_continues_a_partial_prefill_in_arrival_order() -> None:
    fcfs = make_policy("decodes-first", roofline(), budget=300)
    partial = with_tier(prefilling(1, arrival=5.0, prompt=1000, computed=256), "standard")
    earlier = with_tier(waiting(2, arrival=1.0, prompt=100), "standard")
    plan = fcfs.schedule(state([partial], [earlier], now=6.0))
    assert plan.scheduled == [(2, 100), (1, 200)]


def test_qoserve_paper_caps_its_decodes_and_starts_from_8500_tokens_per_second() -> None:
    lat = load_latency_model("qoserve-a100")
    paper = make_policy("qoserve", lat, **PAPER_CONFIG)
    assert paper.config.chunk_grid[-1] == 2552
    assert paper._throughput == 8500.0
    decodes = [
        with_tier(decoding(k, arrival=0.0, generated=2, first_token_s=0.5), "batch")
        for k in range(300)
    ]
    plan = paper.schedule(state(decodes, [], now=1.0, max_num_seqs=1000))
    assert len(plan.scheduled) == 256  # stops once the step holds chunk_size = 256 decodes
    ours = make_policy("qoserve", lat)
    assert len(ours.schedule(state(decodes, [], now=1.0, max_num_seqs=1000)).scheduled) == 300
