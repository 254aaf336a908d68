"""How long a request's decode will take, learned from the requests that finished.

A request of a tier with an end-to-end deadline must get its first token early enough to
finish its decode before that deadline. The sorter plans its prefill against the end-to-end
deadline less a *decode reserve* (``MultiLevelPrioritySorter.decode_reserve``). The output
length is unknown when the prefill is planned, so the reserve is an estimate:

    decode time = q-quantile of the output lengths of the tier's last finished requests
                  x an EMA of the predicted time of the steps the policy plans

* The lengths are kept per tier level (the tier's priority; tiers that share one share the
  sample), the last ``window`` finished requests of each, counted when the policy is told a
  request left (``Policy.forget``) with at least one token out. An aborted request counts with
  the tokens it had: clients that disconnect early make the reserve shorter, not longer.
* A running decode gets one token per step, so the step time is its pace. The steps the
  policy is not asked to plan (a host may run decode-only steps on its own) are shorter than
  the ones it plans, so the pace errs long.
* Until a level has ``min_samples`` lengths, or no step was planned, the estimate is NaN and the
  sorter keeps its fixed margin (``slack_margin_s``); the sorter also caps the estimate at that
  margin and at a share of the end-to-end target.

Why a high quantile: the reserve is when the prefill must start at the latest. Planned just in
time for an average decode, every request with a longer than average output starts too late to
finish (docs/results.md, a short end-to-end target under overload: with a reserve of half a
15 s target, the requests that made it had started 6.8 s after arrival, median, and were the
short ones).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class DecodeTimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # quantile of the finished output lengths (None: no estimate, the sorter's fixed margin)
    quantile: float | None = Field(default=0.97, gt=0.0, le=1.0)
    window: int = Field(default=512, ge=1)  # finished requests kept per tier level
    min_samples: int = Field(default=32, ge=1)  # fewer: no estimate for the level
    step_decay: float = Field(default=0.99, ge=0.0, lt=1.0)  # EMA of the planned step time


class DecodeTimeEstimator:
    def __init__(self, config: DecodeTimeConfig):
        self.config = config
        self._lengths: dict[int, deque[int]] = {}
        self._tokens: dict[int, float] = {}  # level -> quantile of its lengths (cache)
        self._step_s = float("nan")  # EMA of the planned steps' predicted time

    @property
    def enabled(self) -> bool:
        return self.config.quantile is not None

    @property
    def learned(self) -> bool:
        """Whether any output length was recorded."""
        return bool(self._lengths)

    def record(self, level: int, num_generated: int) -> None:
        """A request of tier level ``level`` left after ``num_generated`` output tokens."""
        if num_generated <= 0 or not self.enabled:
            return
        lengths = self._lengths.get(level)
        if lengths is None:
            lengths = self._lengths[level] = deque(maxlen=self.config.window)
        lengths.append(num_generated)
        self._tokens.pop(level, None)

    def observe_step(self, predicted_s: float) -> None:
        """A step was planned with this predicted time (0: nothing planned, ignored)."""
        if predicted_s <= 0.0:
            return
        if self._step_s != self._step_s:  # NaN: the first step
            self._step_s = predicted_s
        else:
            d = self.config.step_decay
            self._step_s = d * self._step_s + (1.0 - d) * predicted_s

    def output_tokens(self, level: int) -> float:
        """The quantile of the level's finished output lengths (NaN: too few yet)."""
        q = self._tokens.get(level)
        if q is None:
            lengths = self._lengths.get(level)
            if lengths is None or len(lengths) < self.config.min_samples:
                return float("nan")
            assert self.config.quantile is not None
            q = self._tokens[level] = float(np.quantile(np.fromiter(lengths, np.float64),
                                                        self.config.quantile))
        return q

    def output_tokens_of(self, levels: np.ndarray) -> np.ndarray:
        """``output_tokens`` of each of ``levels`` (NaN where unknown)."""
        out = np.full(len(levels), np.nan)
        for level in self._lengths:
            tokens = self.output_tokens(level)
            if tokens == tokens:
                out[levels == level] = tokens
        return out

    def estimate(self, levels: np.ndarray) -> np.ndarray | None:
        """Predicted decode time of requests of tier levels ``levels`` (NaN where unknown), or
        None when nothing is known yet."""
        if not self._lengths or self._step_s != self._step_s:
            return None
        return self.output_tokens_of(levels) * self._step_s
