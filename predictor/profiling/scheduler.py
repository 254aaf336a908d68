"""A profiling-only vLLM scheduler: vLLM's own scheduler plus per-step controls and a recorder.

It runs inside the EngineCore process (the profiler runs vLLM in-process, so the driver can
reach it). Before each step the driver may set:

  step_token_budget   the step's token budget (decodes first, then prefill chunks fill the rest)
  step_chunk_cap      the largest prefill chunk of one request (long_prefill_token_threshold)

Each non-empty step is recorded as a ``StepRecord``: its BatchShape, the wall seconds from the end
of ``schedule`` to the start of ``update_from_output`` (the model runner's execute + sample time
that the serving scheduler's latency model predicts), and the CPU seconds this thread spent in
that interval. In-process on CPU the model runs on this thread, so ``wall - cpu`` is time the
step lost to other processes (a shared machine); the profiler uses it to drop contended steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from predictor.profiling.shape import ScheduledItem, shape_of_step
from slidingserve.latency.features import BatchShape


@dataclass(frozen=True, slots=True)
class StepRecord:
    shape: BatchShape
    wall_s: float
    cpu_s: float


class ProfilingScheduler(Scheduler):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.step_token_budget: int | None = None
        self.step_chunk_cap: int = 0
        self.records: list[StepRecord] = []
        self._in_flight: tuple[BatchShape, float, float] | None = None
        self._default_budget = self.max_num_scheduled_tokens
        self.adaptive_long_prefill_threshold = False

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        budget = self.step_token_budget or self._default_budget
        self.max_num_scheduled_tokens = min(budget, self._default_budget)
        self.scheduler_config.long_prefill_token_threshold = self.step_chunk_cap
        out = super().schedule(*args, **kwargs)
        items = []
        for req_id, n in out.num_scheduled_tokens.items():
            req = self.requests[req_id]
            before = req.num_computed_tokens - n  # schedule() has advanced it already
            items.append(ScheduledItem(n, before, req.num_tokens - before))
        self._in_flight = (
            (shape_of_step(items), time.perf_counter(), time.thread_time()) if items else None
        )
        return out

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        now, cpu_now = time.perf_counter(), time.thread_time()
        if self._in_flight is not None:
            shape, started, cpu_started = self._in_flight
            self.records.append(StepRecord(shape, now - started, cpu_now - cpu_started))
            self._in_flight = None
        return super().update_from_output(scheduler_output, model_runner_output)
