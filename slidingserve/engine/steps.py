"""Per-step timing: each step's batch features, measured latency and the planning overhead.

A step's latency is the wall time from the end of ``schedule()`` to the start of
``update_from_output()``: the model runner's execute + sample time, which is what the latency
model predicts (the predictor's profiler measures the same span). The planning overhead is the
time the adapter spent in ``schedule()`` (translation + policy + applying the plan), split into
``plan_s`` (the policy's ``schedule`` call alone) and ``sched_s`` (all of it).

Rows are written in the predictor's step-trace format (``predictor.steptrace``) with extra
columns ``timestamp_s``, ``plan_s``, ``sched_s``, ``predicted_s``, the step's request counts
(``num_reqs`` run, ``num_planned``, ``num_running``/``num_waiting`` before it), ``free_blocks``,
``cut`` (1 when the plan was cut short), ``policy`` and ``latency_version``. The file is
rewritten atomically every ``flush_every`` steps, when the engine idles and at shutdown, so
serving continuously produces training data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.steptrace import Provenance, StepTrace, write_steptrace


@dataclass(slots=True)
class _Pending:
    features: np.ndarray
    ended: float
    columns: dict[str, float]


@dataclass
class StepLog:
    """Accumulates step rows; ``summary()`` gives the overhead figures the benchmark prints."""

    provenance: Provenance
    policy: str
    path: Path | None = None
    flush_every: int = 512
    rows: list[np.ndarray] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    _pending: _Pending | None = None
    _flushed: int = 0

    def scheduled(self, features: np.ndarray, columns: dict[str, float]) -> None:
        """Called at the end of ``schedule()`` for a non-empty step; ``columns``: extra values."""
        self._pending = _Pending(features, time.perf_counter(), columns)

    def finished(self, latency_version: str) -> None:
        """Called at the start of ``update_from_output()``."""
        p, self._pending = self._pending, None
        if p is None:
            return
        latency = time.perf_counter() - p.ended
        if latency <= 0:
            return
        self.rows.append(p.features)
        self.latency_s.append(latency)
        row = {"timestamp_s": time.time(), **p.columns, "policy": self.policy,
               "latency_version": latency_version}
        for name, value in row.items():
            self.extra.setdefault(name, []).append(value)
        if self.path is not None and len(self.latency_s) % self.flush_every == 0:
            self.flush()

    def to_trace(self) -> StepTrace:
        X = np.array(self.rows, dtype=np.float64).reshape(len(self.rows), -1)
        extra = {k: np.asarray(v) for k, v in self.extra.items()} if self.rows else {}
        return StepTrace.from_arrays(X, self.latency_s, self.provenance, extra)

    def flush(self) -> None:
        if self.path is not None and self.rows:
            write_steptrace(self.to_trace(), self.path)
        self._flushed = len(self.rows)

    def flush_if_dirty(self) -> None:
        """Flush if rows arrived since the last flush (the engine calls it when it idles)."""
        if len(self.rows) != self._flushed:
            self.flush()
