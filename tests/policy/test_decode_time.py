"""The decode reserve learned from finished requests (``policy.decode_time``)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from slidingserve.latency import RooflineModel
from slidingserve.policy.base import make_policy
from slidingserve.policy.decode_time import DecodeTimeConfig, DecodeTimeEstimator
from slidingserve.policy.slidingserve import SlidingServe
from slidingserve.policy.sorter import MultiLevelPrioritySorter, SorterConfig
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput
from slidingserve.slo import SLOTier

STANDARD = SLOTier("standard", ttft_s=15.0, tpot_s=0.2, e2e_s=15.0, weight=1.0, priority=1,
                   share=0.7)
CHAT = SLOTier("chat", ttft_s=2.0, tpot_s=0.05, e2e_s=None, weight=2.0, priority=0, share=0.3)


def test_no_estimate_until_min_samples_then_the_quantile_of_the_window() -> None:
    est = DecodeTimeEstimator(DecodeTimeConfig(quantile=0.5, window=4, min_samples=3))
    est.record(1, 10)
    est.record(1, 0)  # nothing generated: not a sample
    est.record(1, 30)
    assert np.isnan(est.output_tokens(1))
    est.record(1, 20)
    assert est.output_tokens(1) == 20.0
    for n in (100, 200, 300):  # the window keeps the last 4: 20, 100, 200, 300
        est.record(1, n)
    assert est.output_tokens(1) == 150.0
    assert np.isnan(est.output_tokens(2))  # another level has its own sample


def test_the_pace_is_an_ema_of_the_planned_steps() -> None:
    est = DecodeTimeEstimator(DecodeTimeConfig(quantile=1.0, min_samples=1, step_decay=0.5))
    est.record(1, 100)
    est.observe_step(0.0)  # nothing planned: not a step
    assert est.estimate(np.ones(1)) is None  # no step planned yet: no pace
    est.observe_step(0.04)  # the first step sets it
    est.observe_step(0.08)
    out = est.estimate(np.ones(1))
    assert out is not None and out[0] == pytest.approx(100 * 0.06)


def test_estimate_is_quantile_length_times_pace_per_level() -> None:
    est = DecodeTimeEstimator(DecodeTimeConfig(quantile=1.0, min_samples=2))
    est.observe_step(0.05)
    assert est.estimate(np.ones(2)) is None  # no finished request yet
    est.record(1, 40)
    est.record(1, 80)
    out = est.estimate(np.array([1.0, 1.0, 0.0]))
    assert out is not None
    assert out[:2].tolist() == pytest.approx([4.0, 4.0]) and np.isnan(out[2])


def test_quantile_none_turns_it_off_and_bad_settings_are_refused() -> None:
    est = DecodeTimeEstimator(DecodeTimeConfig(quantile=None, min_samples=1))
    est.record(1, 50)
    est.observe_step(0.05)
    assert not est.enabled and est.estimate(np.ones(1)) is None
    for bad in ({"quantile": 0.0}, {"quantile": 1.5}, {"window": 0}, {"min_samples": 0}):
        with pytest.raises(ValidationError):
            DecodeTimeConfig(**bad)


def test_the_reserve_takes_the_estimate_where_known_capped_by_the_share() -> None:
    s = MultiLevelPrioritySorter(SorterConfig(slack_margin_s=30.0, slack_margin_frac=0.9))
    due = np.array([15.0, 15.0, 600.0, 600.0])
    e2e = np.array([15.0, 15.0, 600.0, 600.0])
    first = np.ones(4)
    decode = np.array([12.0, np.nan, 45.0, 20.0])
    # 12 s as estimated; unknown: the margin, capped at 0.9 x 15 = 13.5; 45 s capped at the
    # 30 s margin; 20 s as estimated
    assert s.decode_reserve(due, e2e, first, e2e, decode).tolist() == [12.0, 13.5, 30.0, 20.0]


def _view(key: int, tier: SLOTier, generated: int, first: float | None) -> RequestView:
    return RequestView(key, tier, 0.0, 100, 100 + generated - 1 if generated else 0, generated,
                       num_blocks=8 if generated else 0, first_token_s=first)


def test_the_policy_learns_output_lengths_of_finished_end_to_end_requests() -> None:
    pol = make_policy("slidingserve", RooflineModel(),
                      decode_time={"quantile": 1.0, "min_samples": 1})
    assert isinstance(pol, SlidingServe)
    running = [_view(1, STANDARD, 120, 1.0), _view(2, CHAT, 300, 1.0),
               _view(3, STANDARD, 40, 2.0)]
    state = SchedulerInput(10.0, running, [_view(4, STANDARD, 0, None)],
                           KVState(free_blocks=1000, total_blocks=1100, block_size=16),
                           HostLimits(max_num_seqs=64))
    pol.schedule(state)
    pol.forget(1)  # finished after 120 tokens: a sample of its tier level
    pol.forget(2)  # no end-to-end target: nothing to reserve for, not a sample
    pol.forget(4)  # never ran: not a sample
    assert pol.decode_time.output_tokens(1) == 120.0
    assert np.isnan(pol.decode_time.output_tokens(0))
    # the waiting request's reserve: 120 tokens x the predicted time of the step planned
    table = pol.tables.build(state.running, state.waiting)
    decode = pol._decode_time(table)
    assert decode is not None
    assert decode[3] == pytest.approx(120 * pol.decode_time._step_s)
    assert 0.0 < pol.decode_time._step_s < 1.0


BATCH = SLOTier("batch", ttft_s=60.0, tpot_s=0.4, e2e_s=60.0, weight=1.0, priority=2,
                share=0.2)


def _e2e(table):  # (end-to-end deadline, has one) per row, as ``schedule`` passes them
    return table.arrival + table.e2e, np.isfinite(table.e2e)


def test_end_to_end_decodes_bound_the_chunk_by_the_pace_they_need() -> None:
    pol = make_policy("slidingserve", RooflineModel(), decode_time={"min_samples": 1})
    assert isinstance(pol, SlidingServe)
    pol.decode_time.record(1, 300)  # `standard` requests produce up to 300 tokens
    pol.decode_time.record(2, 300)
    # arrival 0, now 10: `standard` (15 s) has 5 s left for ~200 more tokens: 25 ms a token,
    # tighter than its 200 ms TPOT; one with 290 out has 5 s for its last ~10: 0.5 s, under its
    # next token's slack (5 s, the end-to-end deadline) but above its TPOT; `batch` (60 s) has
    # 50 s for ~200 tokens: 0.25 s a token, under its 0.4 s TPOT.
    running = [_view(1, STANDARD, 100, 1.0), _view(2, STANDARD, 290, 1.0),
               _view(3, BATCH, 100, 1.0)]
    state = SchedulerInput(10.0, running, [],
                           KVState(free_blocks=1000, total_blocks=1100, block_size=16),
                           HostLimits(max_num_seqs=64))
    table = pol.tables.build(state.running, state.waiting)
    due, decodes, base = table.next_due(), np.arange(3), np.zeros(8)
    none = np.zeros(0, dtype=np.intp)  # no prefill queued
    slack, tpot = pol._e2e_pace(10.0, table, due, *_e2e(table), decodes, none, base)
    assert slack[0] == pytest.approx(5.0 / 200) and tpot[0] == pytest.approx(5.0 / 200)
    assert due[1] - 10.0 == pytest.approx(5.0)
    assert slack[1] == pytest.approx(0.5) and tpot[1] == pytest.approx(0.2)
    assert tpot[2] == pytest.approx(50.0 / 200)
    # a `standard` prefill queued: `batch` decodes (a lower tier) no longer bound the chunk
    waiting = np.array([3], dtype=np.intp)
    table = pol.tables.build(state.running, [_view(4, STANDARD, 0, None)])
    slack, tpot = pol._e2e_pace(10.0, table, table.next_due(), *_e2e(table), decodes, waiting, base)
    assert tpot[0] == pytest.approx(5.0 / 200) and tpot[2] == pytest.approx(0.4)
    # a pace no step can keep (5 s for ~200 tokens at > 25 ms a step): left alone
    slow = make_policy("slidingserve", RooflineModel(), decode_time={"min_samples": 1})
    assert isinstance(slow, SlidingServe)
    slow.decode_time.record(1, 100_000)
    table = slow.tables.build(state.running, state.waiting)
    slack, tpot = slow._e2e_pace(10.0, table, table.next_due(), *_e2e(table), decodes[:1],
                                 np.zeros(0, dtype=np.intp), base)
    assert tpot[0] == pytest.approx(0.2)
    # off: the tiers' own targets
    off = make_policy("slidingserve", RooflineModel(), e2e_pace=False,
                      decode_time={"min_samples": 1})
    assert isinstance(off, SlidingServe)
    off.decode_time.record(1, 300)
    table = off.tables.build(state.running, state.waiting)
    assert off._e2e_pace(10.0, table, table.next_due(), *_e2e(table), decodes,
                         np.zeros(0, dtype=np.intp),
                         base)[1].tolist() == pytest.approx([0.2, 0.2, 0.4])
