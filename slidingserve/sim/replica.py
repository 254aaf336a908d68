"""One simulated engine: a KV cache in blocks, a waiting and a running queue, a policy.

Each step: build a ``SchedulerInput`` from the live ``RequestView`` objects (the output length
stays on the host side), ask the policy for a ``StepPlan``, check it (``check_plan`` raises
``PlanError`` on unknown keys, too many tokens or sequences, KV over-allocation), then apply it:
preempt (free blocks, back to the front of the waiting queue with ``num_computed = 0``: vLLM's
recompute), allocate blocks in plan order, run for the latency model's predicted step time, and
at the step's end advance ``num_computed``; a request whose computed tokens reach its known
tokens emits one output token, and finishes after its last one (``policy.forget``). Per-step
work is O(requests in the step), plus O(waiting) on steps that admit or preempt.

A replica may run a pending decode run (``DecodeRun``, ``slidingserve/sim/fastforward.py``)
instead of a step: its steps advance in O(1) each and are applied to the requests only when
the run is settled; ``load`` and ``outstanding`` read the run meanwhile, and ``enqueue`` and
``fail`` settle it first.

A step lasts what the replica's ``TimingModel`` says (``slidingserve/sim/timing.py``): by
default the policy's own prediction (the oracle); with measured noise, replayed step times
and the policy's planning time the simulator's clock parts from the policy's planning model.
With ``TimingConfig.planner_correction`` the replica tells its planner's model (``corrector``)
each step's time when it launches the step, as the engine adapter does after each step (the
planner plans again only after the step ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slidingserve.latency import LatencyModel, StepOverhead
from slidingserve.policy import HostLimits, KVState, Policy, SchedulerInput, StepPlan
from slidingserve.policy.batch import step_features
from slidingserve.sim.request import SimRequest
from slidingserve.sim.timing import OracleTiming, TimingModel

if TYPE_CHECKING:
    from slidingserve.engine.latency_source import LiveLatencyModel
    from slidingserve.sim.fastforward import DecodeRun

_EPS = 1e-9
Items = list[tuple[SimRequest, int]]


class PlanError(RuntimeError):
    """A policy returned a plan the host cannot run; the message names the request and value."""


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What a router reads of a replica: a snapshot, recomputed only when the replica changed."""

    running: int  # requests holding KV blocks
    waiting: int  # requests holding none (new or preempted)
    decode_ctx_sum: int  # sum over running requests of their context after one more token
    decode_ctx_max: int
    queued_prefill_tokens: int  # tokens still to prefill, running and waiting
    # The same tokens by the tier priority of their request: entry p for priority p.
    queued_by_priority: tuple[int, ...] = ()

    @property
    def outstanding(self) -> int:
        return self.running + self.waiting

    def tokens_ahead(self, priority: int) -> int:
        """Tokens to prefill of requests at priorities <= ``priority`` (served first)."""
        return sum(self.queued_by_priority[: priority + 1])


class Replica:
    def __init__(
        self,
        index: int,
        policy: Policy,
        latency: LatencyModel,
        num_blocks: int,
        block_size: int,
        limits: HostLimits,
        record_token_times: bool = False,
        timing: TimingModel | None = None,
        overhead: StepOverhead | None = None,
        corrector: LiveLatencyModel | None = None,
    ):
        self.index = index
        self.policy = policy
        self.latency = latency
        self.timing = timing or OracleTiming(latency)  # the clock: how long a step takes
        # the policy's model, planning time included (set per step from ``timing.plan_time``)
        self.overhead = overhead
        # the planner's model when it corrects itself online: told each step's time
        self.corrector = corrector
        self.total_blocks = num_blocks
        self.free_blocks = num_blocks
        self.block_size = block_size
        self.limits = limits
        self.record_token_times = record_token_times
        self.running: list = []  # RequestView of requests holding KV blocks, admission order
        self.waiting: list = []  # RequestView of requests holding none (new or preempted)
        self.requests: dict[int, SimRequest] = {}  # live requests on this replica
        self.busy = False
        self.alive = True  # False once failed (SimConfig.fail_replica_at_s): routed nothing
        self.version = 0  # bumped by every command that changes the queues or the views
        self._load: tuple[int, ReplicaLoad] | None = None
        self.step_items: Items = []
        self.step_end_s = 0.0
        self.run: DecodeRun | None = None  # a pending decode run, in place of a step
        self.fast_forwarded = 0  # steps applied by settling decode runs
        self.policy_calls = 0
        self.policy_s = 0.0  # wall time spent inside policy.schedule
        # CPU time (thread_time) spent inside policy.schedule, when ``measure_cpu``: reading a
        # CPU clock is a system call that can cost ~0.5 ms on a busy VM, more than the step.
        self.measure_cpu = False
        self.policy_cpu_s = 0.0
        self.steps = 0
        self.tokens_run = 0
        self.preemptions = 0

    # -- queries ---------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        if self.run is not None:
            return self.run.outstanding()
        return len(self.running) + len(self.waiting)

    def queued_by_priority(self) -> tuple[int, ...]:
        """Tokens still to prefill (waiting requests, and running ones past their next token)
        per tier priority of their request: entry p for priority p."""
        out: list[int] = []
        for views, ahead in ((self.waiting, 0), (self.running, 1)):
            for v in views:
                n = v.prompt_len + v.num_generated - v.num_computed - ahead
                if n:
                    p = v.tier.priority
                    if p >= len(out):
                        out.extend([0] * (p + 1 - len(out)))
                    out[p] += n
        return tuple(out)

    def load(self) -> ReplicaLoad:
        """The router's snapshot of this replica (cached until the replica changes)."""
        if self._load is not None and self._load[0] == self.version:
            return self._load[1]
        if self.run is not None:
            load = self.run.load()
        else:
            ctx = [v.num_computed + 1 for v in self.running]
            by_priority = self.queued_by_priority()
            load = ReplicaLoad(
                len(self.running),
                len(self.waiting),
                sum(ctx),
                max(ctx, default=0),
                sum(by_priority),
                by_priority,
            )
        self._load = (self.version, load)
        return load

    # -- commands --------------------------------------------------------------------------------
    def enqueue(self, req: SimRequest) -> None:
        self.settle_run()  # nothing joins a decode run
        req.replica = self.index
        self.requests[req.view.key] = req
        self.waiting.append(req.view)
        self.version += 1

    def plan(self, now: float) -> StepPlan:
        state = SchedulerInput(
            now,
            self.running,
            self.waiting,
            KVState(self.free_blocks, self.total_blocks, self.block_size),
            self.limits,
        )
        self.policy_calls += 1
        if self.overhead is not None:  # the planner counts the planning time it will take
            self.overhead.overhead_s = self.timing.plan_time(len(self.running) + len(self.waiting))
        t0 = time.perf_counter()
        if self.measure_cpu:
            c0 = time.thread_time()
            plan = self.policy.schedule(state)
            self.policy_cpu_s += time.thread_time() - c0
        else:
            plan = self.policy.schedule(state)
        self.policy_s += time.perf_counter() - t0
        return plan

    def check_plan(self, plan: StepPlan, now: float) -> tuple[Items, list[SimRequest]]:
        """Resolve a plan's keys; raise ``PlanError`` if it cannot run as given."""
        seen: set[int] = set()
        preempted: list[SimRequest] = []
        free = self.free_blocks
        for key in plan.preempt:
            r = self._live(key, now, "preempt")
            if key in seen:
                raise self._error(now, f"request {key} preempted twice")
            if r.view.num_blocks == 0:
                raise self._error(now, f"request {key} preempted but it holds no KV (not running)")
            seen.add(key)
            preempted.append(r)
            free += r.view.num_blocks
        items: Items = []
        tokens = 0
        bs = self.block_size
        max_model_len = self.limits.max_model_len
        requests = self.requests
        for key, n in plan.scheduled:
            r = requests.get(key) or self._live(key, now, "scheduled")  # _live raises
            if key in seen:
                raise self._error(now, f"request {key} appears twice in the plan (or is preempted)")
            seen.add(key)
            v = r.view
            c = v.num_computed
            pending = v.prompt_len + v.num_generated - c
            if not 1 <= n <= pending:
                raise self._error(now, f"request {key}: {n} tokens scheduled, {pending} pending")
            if c + n > max_model_len:
                raise self._error(
                    now,
                    f"request {key}: {c + n} tokens exceed max_model_len {max_model_len}",
                )
            need = -(-(c + n) // bs) - v.num_blocks
            if need > 0:
                free -= need
            if free < 0:
                raise self._error(
                    now,
                    f"KV over-allocation at request {key}: plan needs {-free} blocks more "
                    f"than the {self.free_blocks} free (+ preempted)",
                )
            tokens += n
            items.append((r, n))
        if tokens > self.limits.max_batch_tokens:
            raise self._error(
                now, f"{tokens} tokens exceed max_batch_tokens {self.limits.max_batch_tokens}"
            )
        if len(items) > self.limits.max_num_seqs:
            raise self._error(
                now, f"{len(items)} requests exceed max_num_seqs {self.limits.max_num_seqs}"
            )
        return items, preempted

    def preempt(self, preempted: list[SimRequest]) -> None:
        for r in preempted:
            v = r.view
            self.free_blocks += v.num_blocks
            r.tokens_discarded += v.num_computed
            v.num_computed = 0
            v.num_blocks = 0
            v.num_preemptions += 1
        self.preemptions += len(preempted)
        self.version += 1
        self.running = [v for v in self.running if v.num_blocks > 0]
        self.waiting = [r.view for r in preempted] + self.waiting

    def launch(self, items: Items, now: float, duration: float | None = None) -> float:
        """Allocate blocks for ``items`` (already checked), start the step; returns its end.

        ``duration``: the step's time when the caller already timed it from the same
        features (a fast-forward run's last step); by default, timed here.
        """
        bs = self.block_size
        admitted = False
        allocated = 0
        for r, n in items:
            v = r.view
            held = v.num_blocks
            need = -(-(v.num_computed + n) // bs) - held
            if need > 0:
                if held == 0:
                    admitted = True
                    self.running.append(v)
                v.num_blocks = held + need
                allocated += need
        self.free_blocks -= allocated
        if admitted:
            self.waiting = [v for v in self.waiting if v.num_blocks == 0]
        # The policies' own feature builder: the oracle times steps exactly as planners predict.
        held = len(self.running) + len(self.waiting)
        if duration is None or self.corrector is not None:
            x = step_features([(r.view, n) for r, n in items])
        if duration is None:
            duration = self.timing.step_time(x, self.steps, held, now)
        if not duration > 0:
            raise self._error(now, f"timing model gave a non-positive step time {duration}")
        if self.corrector is not None:  # the planner sees the step's time, as the engine's does
            predicted = float(self.corrector.predict_features(x[None, :])[0])
            self.corrector.observe(predicted, duration - self.timing.plan_time(held))
        self.busy = True
        self.version += 1
        self.step_items = items
        self.step_end_s = now + duration
        self.steps += 1
        return self.step_end_s

    def complete(self, now: float) -> list[SimRequest]:
        """End the step in flight at ``now``: advance tokens, emit, finish. Returns finished."""
        finished: list[SimRequest] = []
        tokens = 0
        for r, n in self.step_items:
            v = r.view
            v.num_computed += n
            r.tokens_run += n
            tokens += n
            if v.num_computed == v.prompt_len + v.num_generated:
                g = v.num_generated = v.num_generated + 1
                if v.first_token_s is None:
                    v.first_token_s = now
                r.last_token_s = now
                due = r.due0 + (g - 1) * r.tpot  # min(due, cap), written out (hot loop)
                if now > (due if due < r.cap else r.cap) + _EPS:
                    r.late_tokens += 1
                if r.token_times is not None:
                    r.token_times.append(now)
                if g == r.spec.output_len:
                    self.retire(r)
                    finished.append(r)
        self.tokens_run += tokens
        if finished:
            self.running = [v for v in self.running if v.num_blocks > 0]
        self.busy = False
        self.version += 1
        self.step_items = []
        return finished

    def begin_run(self, run: DecodeRun) -> float:
        """Run ``run`` (pending) in place of a step; returns the end of its first step."""
        self.run = run
        self.busy = True
        self.version += 1
        self.step_end_s = run.end(0)
        return self.step_end_s

    def next_run_step(self) -> float | None:
        """The pending run's step in flight ended: start its next step and return that step's
        end; after its last step, apply the whole run, leave the replica idle, return None."""
        run = self.run
        assert run is not None
        self.version += 1
        if run.step + 1 < run.steps:
            run.step += 1
            self.step_end_s = run.end(run.step)
            return self.step_end_s
        self.run = None
        run.apply(self, run.steps)
        self.busy = False
        return None

    def settle_run(self) -> None:
        """Apply a pending run's finished steps; its step in flight becomes a normal step (it
        ends when the run's would). Nothing to do without a pending run."""
        run = self.run
        if run is None:
            return
        self.run = None
        j = run.step
        self.launch(run.apply(self, j), run.starts[j], run.durations[j])

    def retire(self, r: SimRequest) -> None:
        """``r`` emitted its last token: free its blocks, drop it, tell the policy."""
        v = r.view
        self.free_blocks += v.num_blocks
        v.num_blocks = 0
        r.finished = True
        del self.requests[v.key]
        self.policy.forget(v.key)

    def fail(self) -> tuple[list[SimRequest], list[SimRequest]]:
        """This replica dies now: its step in flight never ends, its KV is gone.

        Returns (unstarted, lost): requests no token was computed for (``tokens_run == 0``;
        the host routes them again, as new) and the others (marked ``lost``: they count as
        violations; the tokens they ran stay counted, here and on the request).
        """
        self.settle_run()  # the tokens of its finished steps stay counted
        unstarted: list[SimRequest] = []
        lost: list[SimRequest] = []
        for r in self.requests.values():
            v = r.view
            if r.tokens_run == 0:
                v.num_blocks = 0  # blocks of a first chunk still in flight
                r.replica = -1
                unstarted.append(r)
            else:
                r.lost = True
                lost.append(r)
            self.policy.forget(v.key)
        self.alive = False
        self.busy = False
        self.step_items = []
        self.running, self.waiting = [], []
        self.requests = {}
        self.free_blocks = self.total_blocks
        self.version += 1
        unstarted.sort(key=lambda r: r.view.key)
        return unstarted, lost

    # -- helpers ---------------------------------------------------------------------------------
    def _live(self, key: int, now: float, where: str) -> SimRequest:
        r = self.requests.get(key)
        if r is None:
            raise self._error(now, f"{where} key {key!r} is not a live request on this replica")
        return r

    def _error(self, now: float, message: str) -> PlanError:
        return PlanError(
            f"policy {self.policy.name!r}, replica {self.index}, t={now:.6f}s: {message}"
        )
