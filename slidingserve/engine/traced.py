"""``TracedScheduler``: vLLM v1's own scheduler, its decisions untouched, writing a step trace.

``bench engine`` runs vLLM's own FCFS and priority schedulers through this class so that their
steps are measured the way ``SlidingServeScheduler``'s are (``steps.StepLog``: the step's batch
features and measured latency, the wall and CPU time of ``schedule()``, the running and waiting
counts before it). Every decision is ``Scheduler.schedule``'s; the class only times it and
reads the batch off the ``SchedulerOutput`` it returns: a request's chunk is
``num_scheduled_tokens``, its context before the step ``num_computed_tokens`` minus that chunk
(``_update_after_schedule`` has advanced it), and it is a decode when it ran one token with
everything but its last token computed. The cost is one pass over the scheduled requests per
step (a few microseconds per request), spent outside the timed ``schedule()`` call.

Configured by ``additional_config["slidingserve_trace"]`` (``config.TraceConfig``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slidingserve.engine.versions import require_supported_vllm

_VLLM_DIST, _VLLM_VERSION = require_supported_vllm()

from vllm.v1.core.sched.output import SchedulerOutput  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.engine import EngineCoreOutputs  # noqa: E402

from predictor.steptrace import Provenance  # noqa: E402
from slidingserve.engine.config import trace_config  # noqa: E402
from slidingserve.engine.steps import PreemptionTally, StepLog, hardware_name  # noqa: E402
from slidingserve.latency.features import BatchShape, features_of  # noqa: E402


def batch_shape(out: SchedulerOutput, requests: dict[str, Any]) -> BatchShape:
    """The batch ``out`` runs, read after ``schedule()`` (module docstring)."""
    prefill: list[tuple[int, int]] = []
    decode: list[int] = []
    for rid, n in out.num_scheduled_tokens.items():
        req = requests[rid]
        before = req.num_computed_tokens - n
        if n == 1 and before >= req.num_tokens - 1:
            decode.append(before + 1)
        else:
            prefill.append((n, before))
    return BatchShape(prefill=tuple(prefill), decode_ctx=tuple(decode))


class TracedScheduler(Scheduler):
    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        cfg = trace_config(vllm_config.additional_config)
        provenance = Provenance(
            engine=_VLLM_DIST, model=cfg.model_name, hardware=cfg.hardware or hardware_name(),
            version=_VLLM_VERSION,
        )
        self.step_log = StepLog(provenance, cfg.policy, Path(cfg.step_trace), cfg.flush_every,
                                cfg.keep)
        self.preemptions = PreemptionTally()

    def _preempt_request(self, request: Any, timestamp: float, *args: Any, **kwargs: Any
                         ) -> None:
        self.preemptions.note(request.num_computed_tokens)
        super()._preempt_request(request, timestamp, *args, **kwargs)

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        num_running, num_waiting = len(self.running), len(self.waiting)
        free_blocks = self.kv_cache_manager.block_pool.get_num_free_blocks()
        started, cpu = time.perf_counter(), time.thread_time()
        out = super().schedule(throttle_prefills)
        sched_s, sched_cpu_s = time.perf_counter() - started, time.thread_time() - cpu
        if out.total_num_scheduled_tokens:
            x = features_of(batch_shape(out, self.requests))
            self.step_log.scheduled(x, {
                "plan_s": sched_s, "plan_cpu_s": sched_cpu_s, "sched_s": sched_s,
                "predicted_s": 0.0,
                "num_reqs": len(out.num_scheduled_tokens),
                "num_planned": len(out.num_scheduled_tokens),
                "num_running": num_running, "num_waiting": num_waiting,
                "free_blocks": free_blocks, "cut": 0, **self.preemptions.take(),
            })
        return out

    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output: Any
                           ) -> dict[int, EngineCoreOutputs]:
        self.step_log.finished("none")
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if not self.requests:
            self.step_log.flush_if_dirty()
        return outputs

    def shutdown(self) -> None:
        try:
            self.step_log.flush()
        finally:
            super().shutdown()
