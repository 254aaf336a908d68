"""The step-time margin learned from planned steps' real durations (``policy.step_error``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from policy_factories import decoding, roofline, state, waiting
from pydantic import ValidationError

from slidingserve.policy import make_policy
from slidingserve.policy.deadlines import next_due
from slidingserve.policy.slidingserve import SlidingServe
from slidingserve.policy.step_error import StepErrorConfig, StepErrorEstimator


def _feed(est: StepErrorEstimator, ratios: list[float], predicted: float = 0.02) -> None:
    """Plan a step of ``predicted`` s for request 7, then call again ``ratio`` x later with the
    request one token further: one sample each."""
    now, computed = 0.0, 100
    for r in ratios:
        est.planned(now, predicted, 7, computed + 1)
        now, computed = now + r * predicted, computed + 1
        est.observe(now, [decoding(7, prompt=100, generated=computed - 99)])


def test_exact_steps_leave_the_margin_at_one() -> None:
    est = StepErrorEstimator(StepErrorConfig())
    _feed(est, [1.0] * 300)
    assert len(est._ratios) == 256 and est.margin == 1.0


def test_the_margin_is_mean_plus_z_standard_errors_once_there_are_enough_samples() -> None:
    cfg = StepErrorConfig(min_samples=32, window=64, tokens=16, z=1.645)
    est = StepErrorEstimator(cfg)
    rng = np.random.default_rng(0)
    ratios = np.exp(rng.normal(0.0, 0.3, size=200)).tolist()
    _feed(est, ratios[:31])
    assert est.margin == 1.0  # fewer than min_samples
    _feed(est, ratios[31:])
    last = np.array(ratios[-64:])
    want = last.mean() + 1.645 * last.std(ddof=1) / math.sqrt(16)
    assert est.margin == pytest.approx(want, rel=1e-9) and 1.05 < est.margin < 1.3
    slow = StepErrorEstimator(StepErrorConfig(min_samples=2, max_margin=1.5))
    _feed(slow, [3.0, 3.5, 4.0])  # an engine 3-4x slower than its model: capped
    assert slow.margin == 1.5


def test_only_a_call_exactly_one_step_later_is_a_sample() -> None:
    est = StepErrorEstimator(StepErrorConfig())
    est.planned(0.0, 0.02, 7, 101)
    est.observe(0.1, [decoding(7, prompt=100, generated=5)])  # several steps ran in between
    est.planned(0.1, 0.02, 7, 106)
    est.observe(0.2, [decoding(8, prompt=100, generated=2)])  # the request is gone
    est.planned(0.2, 0.02, 7, 106)
    est.observe(5.0, [decoding(7, prompt=100, generated=7)])  # one step, then idle: 240x
    assert len(est._ratios) == 0
    est.planned(5.0, 0.02, 7, 107)
    est.observe(5.025, [decoding(7, prompt=100, generated=8)])
    assert list(est._ratios) == [pytest.approx(1.25)]
    off = StepErrorEstimator(StepErrorConfig(enabled=False))
    _feed(off, [2.0] * 100)
    assert off.margin == 1.0 and len(off._ratios) == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        StepErrorConfig(window=1)
    with pytest.raises(ValidationError):
        StepErrorConfig(max_ratio=1.0)
    with pytest.raises(ValidationError, match="exceeds window"):
        StepErrorConfig(window=16, min_samples=32)
    with pytest.raises(ValueError, match=r"step_error\.z"):
        make_policy("slidingserve", roofline(), step_error={"z": -1})


def test_the_chunk_fits_the_slack_with_the_margin() -> None:
    decs = [decoding(i, "interactive", arrival=0.0, prompt=1000, generated=10,
                     first_token_s=0.55 + 0.01 * i) for i in range(20)]
    st = state(running=decs, waiting_=[waiting(200, "standard", arrival=1.0, prompt=3000)],
               now=1.0)
    tightest = min(next_due(r) for r in decs) - st.now_s
    plain = make_policy("slidingserve", roofline()).schedule(st)
    pol = make_policy("slidingserve", roofline())
    assert isinstance(pol, SlidingServe)
    pol.step_error.margin = 1.3
    plan = pol.schedule(st)
    assert plan.stats["prefill_tokens"] < plain.stats["prefill_tokens"]
    assert plan.predicted_s * 1.3 <= tightest + 1e-12 < plain.predicted_s * 1.3
