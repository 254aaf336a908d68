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
