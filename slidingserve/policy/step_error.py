"""A safety margin learned from how long planned steps really took.

The planners fit each step's predicted time into the tightest decode's slack. Where steps take
exactly what the model predicts (the simulator's oracle clock) any margin is lost throughput;
where they do not (a real engine, the simulator's noisy clock), a step planned to the last
microsecond of slack makes a decode late as often as the step runs slow. The margin here is
measured instead of configured: each time the host calls the planner right after the step it
planned (one step later, nothing skipped in between), ``elapsed / predicted`` of that step is a
sample. Over the last ``window`` samples, with mean ``m`` and standard deviation ``s``,

    margin = max(1, m + z x s / sqrt(tokens)), at most ``max_margin``

A TPOT target is judged on the mean over a request's output, so a decode is late when the sum
of its steps' errors is: the mean of ``tokens`` ratios has standard deviation ``s / sqrt(tokens)``,
and ``z`` (1.645) keeps that sum within the plan for about 95% of such runs of steps. The
mean ``m`` covers a bias (the planner's own time, an engine slower than its model). The margin
multiplies the chunker's ``safety``. Where the ratios are all 1 (the oracle), the margin is
exactly 1 and the plans are those without it.

"One step later" is read from the requests: a request the plan scheduled for ``n`` tokens has
exactly ``n`` more computed at the next call (a host that ran fixed decode steps without
calling the planner, ``Policy.fixed_decode_steps``, or sat idle between two calls, fails this
or gives an outlier that one step cannot: samples above ``max_ratio`` are dropped).
"""

from __future__ import annotations

import math
from collections import deque

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidingserve.policy.types import RequestView


class StepErrorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    window: int = Field(default=256, ge=2)  # recent samples of elapsed / predicted
    min_samples: int = Field(default=32, ge=2)  # margin 1 until this many
    tokens: int = Field(default=16, ge=1)  # output tokens a mean-TPOT target averages, at least
    z: float = Field(default=1.645, ge=0.0, le=10.0)
    max_ratio: float = Field(default=10.0, gt=1.0)  # larger samples: not one step (idle host)
    max_margin: float = Field(default=2.0, ge=1.0, le=10.0)

    @model_validator(mode="after")
    def _window_holds_min_samples(self) -> StepErrorConfig:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds window ({self.window}): "
                             "the margin would never leave 1")
        return self


class StepErrorEstimator:
    """Samples of elapsed / predicted step time, and the margin they give (module docstring)."""

    def __init__(self, config: StepErrorConfig):
        self.config = config
        self._ratios: deque[float] = deque(maxlen=config.window)
        self._sum = self._sum_sq = 0.0
        self._added = 0
        # the last plan: (start, predicted step time, a request's key, its computed after)
        self._last: tuple[float, float, int, int] | None = None
        self.margin = 1.0

    def observe(self, now: float, views: list[RequestView]) -> None:
        """The host calls the planner at ``now``; ``views``: the requests it holds (running
        first, the last plan's requests among them if still there)."""
        last, self._last = self._last, None
        if last is None or not self.config.enabled:
            return
        start, predicted, key, expected = last
        for v in views:
            if v.key == key:
                if v.num_computed == expected:
                    self._add((now - start) / predicted)
                return

    def planned(self, now: float, predicted: float, key: int | None, computed: int) -> None:
        """The plan made at ``now``: its predicted time, and one scheduled request (its key and
        tokens computed once the step has run); ``key`` None: nothing to follow."""
        if self.config.enabled and key is not None and predicted > 0.0:
            self._last = (now, predicted, key, computed)

    def _add(self, ratio: float) -> None:
        c = self.config
        if not (0.0 < ratio <= c.max_ratio):
            return
        q = self._ratios
        if len(q) == q.maxlen:
            old = q[0]
            self._sum -= old
            self._sum_sq -= old * old
        q.append(ratio)
        self._sum += ratio
        self._sum_sq += ratio * ratio
        self._added += 1
        if self._added % c.window == 0:  # exact sums now and then: no drift over long runs
            self._sum, self._sum_sq = math.fsum(q), math.fsum(r * r for r in q)
        n = len(q)
        if n < c.min_samples:
            return
        mean = self._sum / n
        var = max(self._sum_sq / n - mean * mean, 0.0) * n / (n - 1)
        margin = mean + c.z * math.sqrt(var) / math.sqrt(c.tokens)
        # float noise of exact ratios must not move plans: 1 unless measurably above
        self.margin = min(margin, c.max_margin) if margin > 1.0 + 1e-6 else 1.0
