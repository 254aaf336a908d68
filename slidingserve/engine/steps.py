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
It holds the most recent ``keep`` steps (a sliding window) in arrays allocated and filled when
the log is made (the extra columns at the first step): a long-running replica's memory is the
same from the first step on (about 10 MiB at 50,000 rows), and retraining sees the engine as it
is now.

A rewrite writes every row held, so its cost grows with the window (about 1.5 ms per 1,000
rows on a 2-core CPU, 75 ms at 50,000, most of it Parquet's own encoding), and it runs in the
engine's loop between two steps. At a fixed period the engine would slow down the longer it
serves, until the window is full. So a step-triggered rewrite also waits until
``rewrite_share`` of the rows held are new: a rewrite every ``max(flush_every, rewrite_share x
rows held)`` steps, at most ``1 / rewrite_share`` rows written per step, whatever the window. A
small window (a new replica, a test) is still written every ``flush_every`` steps; rewrites
when the engine idles cost it nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.steptrace import TIMESTAMP_COLUMN, Provenance, StepTrace, write_steptrace
from slidingserve.latency.features import N_FEATURES


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
    total: int = field(init=False, default=0)  # steps recorded since start
    unrecorded: int = field(init=False, default=0)  # steps left out (work beyond the features)
    _pending: _Pending | None = None
    _flushed: int = 0
    # the window: rings of ``keep`` rows, allocated and filled up front, so that the log's
    # memory is the same from the first step on (about 10 MiB at 50,000 rows)
    _X: np.ndarray = field(init=False, repr=False)
    _latency: np.ndarray = field(init=False, repr=False)
    _columns: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.keep <= 0:
            raise ValueError(f"keep must be > 0 (got {self.keep})")
        if not 0 < self.rewrite_share <= 1:
            raise ValueError(f"rewrite_share must be in (0, 1] (got {self.rewrite_share})")
        self._X = np.full((self.keep, N_FEATURES), np.nan)
        self._latency = np.full(self.keep, np.nan)

    @property
    def held(self) -> int:
        """Rows in the window now."""
        return min(self.total, self.keep)

    @property
    def X(self) -> np.ndarray:
        """The window's features, oldest first (a copy)."""
        return self._ordered(self._X)

    @property
    def latency_s(self) -> np.ndarray:
        """The window's measured latencies, oldest first (a copy)."""
        return self._ordered(self._latency)

    @property
    def extra(self) -> dict[str, np.ndarray]:
        """The window's extra columns by name, oldest first (copies)."""
        return {name: self._ordered(col) for name, col in self._columns.items()}

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
        i = self.total % self.keep
        self._X[i] = p.features
        self._latency[i] = latency
        row = {TIMESTAMP_COLUMN: time.time(), **p.columns, "policy": self.policy,
               "latency_version": latency_version}
        for name, value in row.items():
            col = self._columns.get(name)
            if col is None:  # a column first seen now: empty in the rows before
                col = self._columns[name] = np.full(self.keep, None, dtype=object) \
                    if isinstance(value, str) else np.full(self.keep, np.nan)
            col[i] = value
        self.total += 1
        if self.path is not None and self.total - self._flushed >= self.rewrite_period:
            self.flush()
        return StepTiming(latency, float(p.columns.get("predicted_s", 0.0)),
                          bool(p.columns.get("cut", 0)))

    @property
    def rewrite_period(self) -> int:
        """Steps between step-triggered rewrites now (module docstring)."""
        return max(self.flush_every, int(self.rewrite_share * self.held))

    def _ordered(self, ring: np.ndarray) -> np.ndarray:
        if self.total <= self.keep:
            return ring[:self.total].copy()
        head = self.total % self.keep  # the oldest row
        return np.concatenate([ring[head:], ring[:head]])

    def to_trace(self) -> StepTrace:
        return StepTrace.from_arrays(self.X, self.latency_s, self.provenance, self.extra)

    def flush(self) -> None:
        if self.path is not None and self.held:
            write_steptrace(self.to_trace(), self.path)
        self._flushed = self.total

    def flush_if_dirty(self) -> None:
        """Flush if rows arrived since the last flush (the engine calls it when it idles)."""
        if self.total != self._flushed:
            self.flush()
