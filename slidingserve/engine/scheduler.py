"""``SlidingServeScheduler``: vLLM v1's scheduler with the step decided by a SlidingServe policy.

Load it with ``EngineArgs(scheduler_cls=SCHEDULER_CLS, additional_config=...)``
(``slidingserve.engine.config``). Each step it translates vLLM's request state into the
policy's plain ``SchedulerInput``, calls the same policy object the simulator calls, and applies
the returned ``StepPlan`` with vLLM's own primitives, so vLLM's bookkeeping (KV allocation via
``kv_cache_manager``, ``num_computed_tokens``, ``SchedulerOutput``, outputs, stats) is unchanged.

Overrides, and why each is needed:

* ``__init__``: builds the policy, the tier set, the live latency model and the step log;
  refuses engine features the plan applier does not handle (speculative decoding, KV/EC
  connectors, LoRA, pipeline parallelism, multimodal/encoder-decoder and Mamba models, async
  scheduling: README.md says why).
* ``schedule``: the decision (a step whose plan the policy declares fixed,
  ``Policy.fixed_decode_steps``, is built without calling the policy, as in the
  simulator). vLLM's ``schedule`` interleaves its FCFS/priority decision with
  the bookkeeping, so the decision cannot be swapped in alone; ``_apply`` keeps the bookkeeping
  of vLLM's ``schedule`` for the features above being off, in the same order (preempt, allocate
  running, admit waiting, build ``SchedulerOutput``, ``_update_after_schedule``).
* ``_snapshot``: with prefix caching on, a waiting request's view starts from its cached
  prefix and a running one's counts the blocks it shares (``engine.prefix``).
* ``add_request``: gives each request our integer key and its SLO tier (from
  ``SamplingParams.extra_args``); a request with an unknown tier is refused.
* ``update_from_output``: records the step's measured latency, then finishes refused requests
  with ``FINISHED_ERROR`` and the reason in ``stop_reason``; flushes the step trace when idle.
  A step that runs a logprobs path for the first time in the engine is not recorded: the
  first use costs seconds of one-off set-up (2.6-3.5 s for a 32-token prefill on the CPU
  engine, against ~30 ms later), which no batch feature describes.
* ``_free_request``: drops a finished/aborted request from the book and the policy.
* ``shutdown``: flushes the step trace.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slidingserve.engine.versions import require_supported_vllm

_VLLM_DIST, _VLLM_VERSION = require_supported_vllm()

from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.engine import EngineCoreEventType, EngineCoreOutput, EngineCoreOutputs  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402

from predictor.steptrace import Provenance  # noqa: E402
from slidingserve.engine.book import RequestBook  # noqa: E402
from slidingserve.engine.config import config_from_additional, path_or_none  # noqa: E402
from slidingserve.engine.latency_source import LiveLatencyModel  # noqa: E402
from slidingserve.engine.prefix import PrefixProbe  # noqa: E402
from slidingserve.engine.steps import PreemptionTally, StepLog, hardware_name  # noqa: E402
from slidingserve.latency.features import decode_features  # noqa: E402
from slidingserve.policy.base import decodes_all_fit, make_policy  # noqa: E402
from slidingserve.policy.batch import step_features  # noqa: E402
from slidingserve.policy.types import HostLimits, KVState, SchedulerInput, StepPlan  # noqa: E402

log = logging.getLogger(__name__)
_WAITING_STATES = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
WARM_UP_PATHS = ("logprobs", "prompt_logprobs")  # sampling outputs with a one-off first cost


class PlanError(RuntimeError):
    """A policy returned a plan the engine cannot apply (a policy bug)."""


class SlidingServeScheduler(Scheduler):
    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        self._refuse_unsupported_features()
        cfg = self.ss_config = config_from_additional(vllm_config.additional_config)
        self.book = RequestBook(cfg.load_tiers())
        self.latency = LiveLatencyModel.from_config(
            path_or_none(cfg.latency_model), cfg.roofline, cfg.latency_check_every,
            cfg.latency_correction_decay,
        )
        self.ss_policy = make_policy(cfg.policy, self.latency, **cfg.policy_config)
        self.limits = HostLimits(
            max_num_seqs=self.max_num_running_reqs,
            max_batch_tokens=self.max_num_scheduled_tokens,
            max_model_len=self.max_model_len,
        )
        self.total_blocks = self.kv_cache_manager.block_pool.num_gpu_blocks - 1  # null block
        # prefix caching on: waiting requests start from their cached prefix (engine.prefix)
        self.prefix = PrefixProbe(self.kv_cache_manager) if self.kv_cache_manager.enable_caching \
            else None
        provenance = Provenance(
            engine=_VLLM_DIST,
            model=cfg.model_name,
            hardware=cfg.hardware or hardware_name(),
            version=_VLLM_VERSION,
        )
        self.step_log = StepLog(
            provenance, cfg.policy, path_or_none(cfg.step_trace), cfg.step_trace_flush_every,
            cfg.step_trace_keep,
        )
        self._last_output_s = time.time()
        self._cycle_start_s = self._last_output_s  # when the last schedule() began
        self._busy_pass_s: float | None = None  # its forward pass, if the engine stayed busy
        # steps run, preemptions the plans asked for, steps cut short by a failed allocation,
        # admissions skipped because the running set was full (max_num_seqs),
        # preemptions the host made because a plan left the engine stuck (see _liveness_plan),
        # steps whose plan the policy declares fixed (built without calling it)
        self.counters = {"steps": 0, "preemptions": 0, "alloc_stops": 0, "seq_cap_stops": 0,
                         "liveness_preemptions": 0, "fixed_plans": 0}
        self.preemptions = PreemptionTally()  # the step trace's preemption columns
        self._cut = False
        self._warmed_up: set[str] = set()  # WARM_UP_PATHS some step has run
        log.info("SlidingServe scheduler: policy %s, latency model %s", cfg.policy,
                 self.latency.version)

    def _refuse_unsupported_features(self) -> None:
        unsupported = {
            "speculative decoding": self.num_spec_tokens > 0 or self.num_lookahead_tokens > 0,
            "a KV connector": self.connector is not None,
            "an EC connector": self.ec_connector is not None,
            "an aux output connector": self.aux_output_connector is not None,
            "LoRA": self.lora_config is not None,
            "pipeline parallelism": self.use_pp,
            "encoder-decoder models": self.is_encoder_decoder,
            "Mamba/hybrid models": self.has_mamba_layers,
            "async scheduling": bool(self.scheduler_config.async_scheduling),
            "multi-module MTP prefill lookahead": self.num_prefill_lookahead > 0,
            "prefix caching with a sliding-window replay": (
                self.kv_cache_manager.enable_caching and self.prefix_replay_tokens > 0),
        }
        on = [name for name, enabled in unsupported.items() if enabled]
        if on:
            raise ValueError(
                f"SlidingServeScheduler does not support {', '.join(on)}; turn them off "
                "or use vLLM's own scheduler"
            )

    # -- requests --------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        super().add_request(request)
        self.book.admit(request)
        if request.request_id in self.book.refused:
            log.warning("%s", self.book.refused[request.request_id])

    def _free_request(self, request: Request, delay_free_blocks: bool = False) -> Any:
        key = self.book.drop(request.request_id)
        if key is not None:
            self.ss_policy.forget(key)
        return super()._free_request(request, delay_free_blocks)

    def _preempt_request(self, request: Request, timestamp: float, *args: Any, **kwargs: Any
                         ) -> None:
        self.preemptions.note(request.num_computed_tokens)
        super()._preempt_request(request, timestamp, *args, **kwargs)

    # -- the step --------------------------------------------------------------------------
    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        started = time.perf_counter()
        self._observe_cycle()
        self.latency.poll(self.current_step + 1)
        state = self._snapshot()
        t_plan, cpu_plan = time.perf_counter(), time.thread_time()
        if self._pause_state.name == "PAUSED_ALL":
            plan = StepPlan()
        elif self.ss_policy.fixed_decode_steps and decodes_all_fit(
            state.running, len(state.waiting), state.kv.free_blocks, state.kv.block_size,
            self.limits,
        ):
            plan = self._fixed_decode_plan(state)
        else:
            plan = self.ss_policy.schedule(state)
        if not plan.scheduled and not plan.preempt and state.running and not state.kv.free_blocks:
            plan = self._liveness_plan(state)
        plan_s, plan_cpu_s = time.perf_counter() - t_plan, time.thread_time() - cpu_plan
        out, applied = self._apply(plan)
        if applied:
            by_key = self.book.by_key
            x = step_features((by_key[k].view, n) for k, n in applied)
            first_use = self._first_uses((by_key[k], n) for k, n in applied)
            self.step_log.scheduled(x, {
                "plan_s": plan_s,
                "plan_cpu_s": plan_cpu_s,
                "sched_s": time.perf_counter() - started,
                "predicted_s": plan.predicted_s,
                "latency_scale": self.latency.scale,
                "host_s": self.latency.host_s,
                "num_reqs": len(applied),
                "num_planned": len(plan.scheduled),
                "num_running": len(state.running),
                "num_waiting": len(state.waiting),
                "free_blocks": state.kv.free_blocks,
                "cut": int(self._cut),
                **self.preemptions.take(),
            }, recorded=not first_use)
        return out

    def _observe_cycle(self) -> None:
        """The host time of the last step: from its ``schedule()`` to this one, less its
        forward pass, when the engine went straight on to this step (it still held requests)."""
        wall = time.time()
        if self._busy_pass_s is not None:
            self.latency.observe_host(wall - self._cycle_start_s - self._busy_pass_s)
            self._busy_pass_s = None
        self._cycle_start_s = wall

    def _first_uses(self, scheduled: Any) -> set[str]:
        """The ``WARM_UP_PATHS`` this step runs for the first time in this engine, from its
        (request, tokens) pairs: prompt logprobs for a request in its prompt, logprobs for one
        that samples (its tokens reach the end of what it holds)."""
        used: set[str] = set()
        for t, n in scheduled:
            params, view = t.request.sampling_params, t.view
            if params is None:
                continue
            if params.prompt_logprobs is not None and view.num_computed < view.prompt_len:
                used.add("prompt_logprobs")
            if params.logprobs is not None and view.num_computed + n >= t.request.num_tokens:
                used.add("logprobs")
        first = used - self._warmed_up
        self._warmed_up |= first
        return first

    def _fixed_decode_plan(self, state: SchedulerInput) -> StepPlan:
        """The plan the policy declares for this step (``Policy.fixed_decode_steps``: nothing
        waits and every running decode fits), built without calling it: every running request
        for one token, with the step's predicted time. Counted in ``counters["fixed_plans"]``.
        """
        self.counters["fixed_plans"] += 1
        x = decode_features([v.num_computed + 1 for v in state.running])
        predicted = float(self.latency.predict_features(x[None, :])[0])
        return StepPlan([(v.key, 1) for v in state.running], predicted_s=predicted)

    def _liveness_plan(self, state: SchedulerInput) -> StepPlan:
        """The policy planned nothing with the KV cache full: no step could ever run again.

        A policy bug, but a hung engine is the worst outcome, so the host preempts the last
        running request (vLLM's own victim rule) and asks the policy again. Counted in
        ``counters["liveness_preemptions"]`` and logged; tests assert it stays 0.
        """
        self.counters["liveness_preemptions"] += 1
        log.warning("policy %s planned nothing with the KV cache full; preempting the last "
                    "running request to keep the engine live", self.ss_config.policy)
        victim = self.running[-1]
        self.running.pop()
        self._preempt_request(victim, time.monotonic())
        return self.ss_policy.schedule(self._snapshot())

    def _snapshot(self) -> SchedulerInput:
        now = time.time()
        bs = self.block_size
        running = self.book.views(self.running, bs, True, self._last_output_s, self.prefix)
        waiting = (
            self.book.views(self._eligible_waiting(), bs, False, self._last_output_s,
                            self.prefix)
            if self._pause_state.name == "UNPAUSED"
            else []
        )
        kv = KVState(
            free_blocks=self.kv_cache_manager.block_pool.get_num_free_blocks(),
            total_blocks=self.total_blocks,
            block_size=bs,
        )
        return SchedulerInput(now, running, waiting, kv, self.limits)

    def _eligible_waiting(self) -> Any:
        """Waiting requests that may run now; promotes those whose grammar is ready (as vLLM)."""
        for req in self.waiting:
            if req.status in _WAITING_STATES or (
                self._is_blocked_waiting_status(req.status)
                and self._handle_blocked_waiting_request(req)
            ):
                yield req

    def _apply(self, plan: StepPlan) -> tuple[SchedulerOutput, list[tuple[int, int]]]:
        """Apply ``plan`` with vLLM's primitives; returns the output and what actually ran.

        Preemptions first (they free blocks), then the scheduled requests in plan order. An
        allocation failure stops the step there (the StepPlan contract). An admission into a
        full running set (vLLM's ``max_num_seqs`` cap on requests holding KV) is skipped, as
        vLLM skips it; the rest of the plan still runs. Token counts are clamped to what vLLM
        can compute.
        """
        self.current_step += 1
        self._cut = False
        self.kv_cache_manager.new_step_starts()
        stamp = time.monotonic()
        by_key = self.book.by_key

        for key in plan.preempt:
            victim = self._planned(by_key, key).request
            if victim.status != RequestStatus.RUNNING:
                raise PlanError(f"plan preempts key {key}, which is not running")
            self.running.remove(victim)
            self._preempt_request(victim, stamp)
            self.counters["preemptions"] += 1

        new_reqs: list[Request] = []
        resumed: list[Request] = []
        running: list[Request] = []
        new_blocks: dict[str, Any] = {}
        num_tokens: dict[str, int] = {}
        applied: list[tuple[int, int]] = []
        for key, n in plan.scheduled:
            req = self._planned(by_key, key).request
            if req.request_id in num_tokens:
                raise PlanError(f"plan schedules key {key} twice")
            if req.status == RequestStatus.RUNNING:
                n = min(n, req.num_tokens - req.num_computed_tokens,
                        self.max_model_len - req.num_computed_tokens
                        - self.num_sampled_tokens_per_step)
                if n <= 0:
                    continue
                blocks = self.kv_cache_manager.allocate_slots(req, n)
                if blocks is None:
                    self.counters["alloc_stops"] += 1
                    self._cut = True
                    break
                running.append(req)
            elif req.status in _WAITING_STATES:
                if len(self.running) >= self.max_num_active_reqs:
                    self.counters["seq_cap_stops"] += 1  # running set full: skip, as vLLM does
                    self._cut = True
                    continue
                blocks, n = self._admit(req, n, stamp)
                if blocks is None:
                    self.counters["alloc_stops"] += 1
                    self._cut = True
                    break
                (new_reqs if req.status == RequestStatus.WAITING else resumed).append(req)
                req.status = RequestStatus.RUNNING
            else:
                raise PlanError(f"plan schedules key {key} in state {req.status.name}")
            new_blocks[req.request_id] = blocks
            num_tokens[req.request_id] = n
            applied.append((key, n))
        self.counters["steps"] += bool(applied)
        return self._make_output(new_reqs, resumed, running, new_blocks, num_tokens), applied

    def _planned(self, by_key: dict, key: int) -> Any:
        try:
            return by_key[key]
        except KeyError:
            raise PlanError(f"plan names key {key}, which the engine does not hold") from None

    def _admit(self, req: Request, n: int, stamp: float) -> tuple[Any, int]:
        """Move a waiting/preempted request to running with ``n`` new tokens (vLLM's steps)."""
        hit_blocks, num_hit, boundary, _ = self._get_local_prefix_cache_hit(req)
        n = min(n, req.num_tokens - num_hit)
        if n <= 0:
            return None, 0
        blocks = self.kv_cache_manager.allocate_slots(
            req,
            n,
            num_new_computed_tokens=num_hit,
            new_computed_blocks=hit_blocks,
            # vLLM admits only when the whole prompt fits (scheduler_reserve_full_isl) and
            # keeps a watermark of free blocks; here admission is the policy's decision (it
            # sees the exact free blocks and plans preemption), so neither hidden rule applies.
            full_sequence_must_fit=False,
            has_scheduled_reqs=False,
        )
        if blocks is None:
            return None, 0
        req.shared_prefix_boundary = boundary
        if req.prefill_stats and req.num_preemptions <= 0:
            req.prefill_stats.set(
                num_prompt_tokens=req.num_prompt_tokens,
                num_local_cached_tokens=num_hit,
                num_external_cached_tokens=0,
            )
        self.kv_cache_manager.record_prefix_cache_stats(req, num_hit)
        self.waiting.remove_request(req)
        self.deferred_waiting.discard(req)
        self.running.append(req)
        if self.log_stats:
            req.record_event(EngineCoreEventType.SCHEDULED, stamp)
        req.num_computed_tokens = num_hit
        self.book.by_id[req.request_id].view.num_computed = num_hit  # the step's features
        if num_hit + n < req.num_tokens:
            self._inflight_prefills.add(req)
        return self.kv_cache_manager.get_blocks(req.request_id), n

    def _make_output(self, new_reqs: list[Request], resumed: list[Request],
                     running: list[Request], new_blocks: dict[str, Any],
                     num_tokens: dict[str, int]) -> SchedulerOutput:
        """vLLM's ``SchedulerOutput`` construction, for the features this adapter supports."""
        if self.use_v2_model_runner:
            new_reqs = new_reqs + resumed
            resumed = []
            new_data = [
                NewRequestData.from_request(
                    r, new_blocks[r.request_id].get_block_ids(), r._all_token_ids,
                    uses_mrope=self.model_uses_mrope,
                )
                for r in new_reqs
            ]
        else:
            new_data = [
                NewRequestData.from_request(
                    r, new_blocks[r.request_id].get_block_ids(), uses_mrope=self.model_uses_mrope
                )
                for r in new_reqs
            ]
        cached = self._make_cached_request_data(running, resumed, num_tokens, {}, new_blocks)
        if not self.use_v2_model_runner:
            self.prev_step_scheduled_req_ids.clear()
            self.prev_step_scheduled_req_ids.update(num_tokens)
        self.kv_cache_manager.take_boundary_state_offloads()  # drained every step, as vLLM does
        copies, cow_retained = self.kv_cache_manager.take_kv_cache_block_copies()
        if copies:
            self._free_cow_retained_blocks(cow_retained, self.sched_step_seq + 1)
        out = SchedulerOutput(
            scheduled_new_reqs=new_data,
            scheduled_cached_reqs=cached,
            num_scheduled_tokens=num_tokens,
            total_num_scheduled_tokens=sum(num_tokens.values()),
            scheduled_spec_decode_tokens={},
            scheduled_encoder_inputs={},
            scheduled_encoder_input_stats=None,
            preempted_req_ids=self.reset_preempted_req_ids,
            finished_req_ids=self.finished_req_ids,
            free_encoder_mm_hashes=self.encoder_cache_manager.get_freed_mm_hashes(),
            new_block_ids_to_zero=self._get_new_block_ids_to_zero(),
            has_sync_kv_loads=False,
            kv_cache_block_copies=copies or None,
            kv_connector_block_state=None,
            num_spec_tokens_to_schedule=self.num_spec_tokens,
            ec_manager_metadata=self.encoder_cache_manager.get_manager_metadata(),
        )
        self._update_after_schedule(out)
        return out

    # -- outputs ---------------------------------------------------------------------------
    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output: Any
                           ) -> dict[int, EngineCoreOutputs]:
        step = self.step_log.finished(self.latency.version)
        if step is not None and not step.cut:
            self.latency.observe(step.predicted_s, step.latency_s)
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self._last_output_s = time.time()
        self._busy_pass_s = step.latency_s if step is not None and self.running else None
        if self.book.refused:
            self._finish_refused(outputs)
        if not self.requests:  # idle: make the step trace complete on disk
            self.step_log.flush_if_dirty()
        return outputs

    def _finish_refused(self, outputs: dict[int, EngineCoreOutputs]) -> None:
        reasons = dict(self.book.refused)
        for req in self.finish_requests(list(reasons), RequestStatus.FINISHED_ERROR):
            eco = outputs.setdefault(req.client_index, EngineCoreOutputs())
            eco.outputs.append(
                EngineCoreOutput(
                    request_id=req.request_id,
                    new_token_ids=[],
                    finish_reason=req.get_finished_reason(),
                    stop_reason=reasons[req.request_id],
                    events=req.take_events(),
                    trace_headers=req.trace_headers,
                )
            )

    def shutdown(self) -> None:
        try:
            self.step_log.flush()
        finally:
            super().shutdown()
