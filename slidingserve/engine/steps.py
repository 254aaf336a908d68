"""Per-step timing: each step's batch features, measured latency and the planning overhead.

A step's latency is the wall time from the end of ``schedule()`` to the start of
``update_from_output()``: the model runner's execute + sample time, which is what the latency
model predicts (the predictor's profiler measures the same span). The planning overhead is the
time the adapter spent in ``schedule()`` (translation + policy + applying the plan), split into
``plan_s`` (the policy's ``schedule`` call alone) and ``sched_s`` (all of it).

Rows are written in the predictor's step-trace format (``predictor.steptrace``) with extra
columns ``timestamp_s``, ``plan_s``, ``plan_cpu_s``, ``sched_s``, ``predicted_s``, the step's
request counts (``num_reqs`` run, ``num_planned``, ``num_running``/``num_waiting`` before it),
``free_blocks``, ``cut`` (1 when the plan was cut short), ``preempted`` /
``preempted_tokens`` (requests preempted since the previous recorded step and the computed
tokens they discarded, which vLLM recomputes: ``PreemptionTally``), ``latency_scale`` (the
online correction in use), ``host_s`` (the host time per step added to predictions),
``policy`` and ``latency_version``. The file is rewritten atomically
every ``flush_every`` steps, when the engine idles and at shutdown, so serving continuously
produces training data.
It holds the most recent ``keep`` steps (a sliding window): a long-running replica's memory
stays bounded, and retraining sees the engine as it is now.

A rewrite writes every row held, so its cost grows with the window (about 3.8 ms per 1,000
rows on a 2-core CPU: 190 ms at 50,000), and it runs in the engine's loop between two steps.
At a fixed period the engine would slow down the longer it serves, until the window is full.
So a step-triggered rewrite also waits until ``rewrite_share`` of the rows held are
new: a rewrite every ``max(flush_every, rewrite_share x rows held)`` steps, at most
``1 / rewrite_share`` rows written per step, whatever the window. A small window (a new
replica, a test) is still written every ``flush_every`` steps; rewrites when the engine idles
cost it nothing and stay as they were.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.steptrace import Provenance, StepTrace, write_steptrace


def hardware_name() -> str:
    """The step trace's default hardware provenance: the GPU's name where vLLM runs on one
    (NVML's, e.g. ``NVIDIA H100 80GB HBM3``), else the machine and its CPU count."""
    import os
    import platform

    try:
        from vllm.platforms import current_platform

        if current_platform.is_cuda_alike():
            return str(current_platform.get_device_name(0))
    except Exception:  # no vLLM, or NVML unreadable: name the host
        pass
    return f"{platform.machine()}-{os.cpu_count()}cpu"


@dataclass(slots=True)
class PreemptionTally:
    """The requests a scheduler preempted and the computed tokens they discarded (a preempted
    request's KV is freed and vLLM recomputes it on resumption), since the last ``take()``."""

    requests: int = 0
    tokens: int = 0

    def note(self, num_computed_tokens: int) -> None:
        self.requests += 1
        self.tokens += int(num_computed_tokens)

    def take(self) -> dict[str, float]:
        """The step trace's ``preempted`` / ``preempted_tokens`` columns; resets the tally."""
        out = {"preempted": float(self.requests), "preempted_tokens": float(self.tokens)}
        self.requests = self.tokens = 0
        return out


@dataclass(frozen=True, slots=True)
class StepTiming:
    latency_s: float  # measured
    predicted_s: float  # the plan's prediction (0: the policy predicts nothing)
    cut: bool  # the plan was cut short, so the prediction is of another batch


@dataclass(slots=True)
class _Pending:
    features: np.ndarray
    ended: float
    columns: dict[str, float]
    recorded: bool


@dataclass
class StepLog:
    """Accumulates step rows; ``summary()`` gives the overhead figures the benchmark prints."""

    provenance: Provenance
    policy: str
    path: Path | None = None
    flush_every: int = 512
    keep: int = 50_000  # most recent steps held and written
    rewrite_share: float = 0.125  # new rows (share of those held) a step-triggered rewrite needs
    rows: deque[np.ndarray] = field(init=False)
    latency_s: deque[float] = field(init=False)
    extra: dict[str, deque] = field(init=False, default_factory=dict)
    total: int = field(init=False, default=0)  # steps recorded since start
    unrecorded: int = field(init=False, default=0)  # steps left out (work beyond the features)
    _pending: _Pending | None = None
    _flushed: int = 0

    def __post_init__(self) -> None:
        if self.keep <= 0:
            raise ValueError(f"keep must be > 0 (got {self.keep})")
        if not 0 < self.rewrite_share <= 1:
            raise ValueError(f"rewrite_share must be in (0, 1] (got {self.rewrite_share})")
        self.rows, self.latency_s = deque(maxlen=self.keep), deque(maxlen=self.keep)

    def scheduled(self, features: np.ndarray, columns: dict[str, float],
                  recorded: bool = True) -> None:
        """Called at the end of ``schedule()`` for a non-empty step; ``columns``: extra values.
        ``recorded=False``: the step does work its features do not describe (a one-off set-up),
        so its latency is no sample of the latency model's function: it is left out."""
        self._pending = _Pending(features, time.perf_counter(), columns, recorded)

    def finished(self, latency_version: str) -> StepTiming | None:
        """Called at the start of ``update_from_output()``; the step's timing, if one ran and
        is recorded."""
        p, self._pending = self._pending, None
        if p is None:
            return None
        if not p.recorded:
            self.unrecorded += 1
            return None
        latency = time.perf_counter() - p.ended
        if latency <= 0:
            return None
        self.rows.append(p.features)
        self.latency_s.append(latency)
        row = {"timestamp_s": time.time(), **p.columns, "policy": self.policy,
               "latency_version": latency_version}
        for name, value in row.items():
            self.extra.setdefault(name, deque(maxlen=self.keep)).append(value)
        self.total += 1
        if self.path is not None and self.total - self._flushed >= self.rewrite_period:
            self.flush()
        return StepTiming(latency, float(p.columns.get("predicted_s", 0.0)),
                          bool(p.columns.get("cut", 0)))

    @property
    def rewrite_period(self) -> int:
        """Steps between step-triggered rewrites now (module docstring)."""
        return max(self.flush_every, int(self.rewrite_share * len(self.rows)))

    def to_trace(self) -> StepTrace:
        X = np.array(self.rows, dtype=np.float64).reshape(len(self.rows), -1)
        extra = {k: np.asarray(v) for k, v in self.extra.items()} if self.rows else {}
        return StepTrace.from_arrays(X, self.latency_s, self.provenance, extra)

    def flush(self) -> None:
        if self.path is not None and self.rows:
            write_steptrace(self.to_trace(), self.path)
        self._flushed = self.total

    def flush_if_dirty(self) -> None:
        """Flush if rows arrived since the last flush (the engine calls it when it idles)."""
        if self.total != self._flushed:
            self.flush()
