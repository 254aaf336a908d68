"""Fast-forwarding runs of identical decode-only steps, per replica.

Most simulated steps at moderate load are pure decode steps: nothing waits, every running
request is in decode and the policy schedules each of them for one token, preempting nothing.
Until a request is routed to the replica (or KV/step limits), the following steps are
decode-only too: contexts grow by one token a step and requests leave as they finish, and a
work-conserving policy has no choice to make (nothing waits, every decode fits), so it
re-issues "every running request, one token". When the policy returns such a plan, the
simulator starts a ``DecodeRun`` instead of a step: the run's length ``K`` (the largest
remaining output, capped by ``max_steps`` and by the KV blocks free now) and the steps' times
(vectorised latency predictions of the steps' batch shapes, one row per step, with the batch
shrinking as requests finish), computed lazily, a few dozen steps at a time.

The run stays pending; the replica's requests keep the state they had when it began. Each
step end is still an event (so the clock and the order of events are stepping's), but it only
moves the run's cursor: O(1), no per-request work. Routers read the pending run's load
analytically (``DecodeRun.load``: the batch shape of the step in flight, exactly what the
replica's queues would hold). The run is *settled* (its finished steps applied to the requests
at once: tokens, token times, late tokens, KV blocks, finishing requests and
``policy.forget``; the step in flight launched as a normal step) when a request is routed to
the replica, when it fails, before the violation monitor looks, and when the simulation ends;
after its last step it is applied whole and the replica plans again.

Invariants (exactly what stepping one by one gives, bit for bit, for a policy that schedules
every decode when nothing waits and all fit):
  * step j starts at T_j (sequential float sums, as in normal stepping); a step in flight when
    something happens to the replica (a request routed to it, a failure) is the step stepping
    would have in flight, and only the steps that ended before are applied;
  * nothing joins the replica during a run (a routed request settles it first), so nothing
    waits during its steps;
  * the KV blocks all K steps could need (ignoring blocks freed by finishing requests) fit in
    the free blocks, so no preemption could have been needed and every step's decodes fit;
  * step K - 1 still holds at least one request (K <= the largest remaining output).
The assumption is on the policy (and on the latency model: a row's prediction in a batch is
the one-step prediction, as for RooflineModel); ``SimConfig.fast_forward=False`` turns the trick
off, and tests/sim check that both give identical records for every registered policy, on one
replica and on a fleet behind every router, with a replica failing. Steps are timed by the
replica's ``TimingModel`` (``step_times``, step numbers from ``replica.steps``): its draws are a
pure function of the step number, so noisy and replayed timing collapse exactly as stepping one
by one would time them.

Fixed plans. A policy may declare the first plan of such a run too (``Policy.fixed_decode_steps``):
when nothing waits, every running request is in decode and all of them fit one more token,
it returns "every running request, one token". For such a policy the simulator builds that
step itself (``fixed_decode_items``) instead of calling ``schedule``; ``SimConfig.
skip_fixed_plans=False`` turns this off, and tests/sim check that both give the same steps.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

import numpy as np

from slidingserve.latency.features import (
    F_DECODE_CTX_MAX,
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_TOTAL_TOKENS,
    N_FEATURES,
)
from slidingserve.policy import RequestView, StepPlan
from slidingserve.policy.base import decodes_all_fit
from slidingserve.sim.replica import Items, Replica, ReplicaLoad

_EPS = 1e-9


def is_decode_only_plan(replica: Replica, plan: StepPlan, items: Items) -> bool:
    """Nothing waits, nothing preempted, and every running request decodes one token."""
    if replica.waiting or plan.preempt or len(items) != len(replica.running):
        return False
    for r, n in items:
        v = r.view
        if n != 1 or v.num_blocks == 0 or v.prompt_len + v.num_generated - v.num_computed != 1:
            return False
    return True


def fixed_decode_items(replica: Replica) -> Items | None:
    """Every running request for one token, if nothing waits, all are in decode and all fit."""
    running = replica.running
    if not decodes_all_fit(running, len(replica.waiting), replica.free_blocks,
                           replica.block_size, replica.limits):
        return None
    requests = replica.requests
    return [(requests[v.key], 1) for v in running]



def start_decode_run(
    replica: Replica, items: Items, now: float, max_steps: int
) -> DecodeRun | None:
    """A pending run beginning with the decode-only step ``items`` at ``now``, or None when it
    would hold one step (the caller then launches that step as a normal one)."""
    views = [r.view for r, _ in items]
    rem = [r.spec.output_len - v.num_generated for (r, _), v in zip(items, views, strict=True)]
    steps = min(max_steps, max(rem))
    if steps <= 1:
        return None
    steps = _steps_that_fit(views, rem, steps, replica.free_blocks, replica.block_size)
    if steps <= 1:
        return None
    return DecodeRun(replica, items, rem, steps, now)


def _blocks_needed(views: list[RequestView], rem: list[int], steps: int, block_size: int) -> int:
    """KV blocks ``steps`` decode steps allocate (no block freed by a finishing request counted)."""
    need = 0
    for v, q in zip(views, rem, strict=True):
        b = -(-(v.num_computed + (q if q < steps else steps)) // block_size) - v.num_blocks
        if b > 0:
            need += b
    return need


def _steps_that_fit(
    views: list[RequestView], rem: list[int], steps: int, free: int, block_size: int
) -> int:
    """The most steps, up to ``steps``, whose blocks fit in ``free`` (1 if none or one does)."""
    if _blocks_needed(views, rem, steps, block_size) <= free:
        return steps
    lo, hi = 1, steps  # blocks needed rise with the steps: bisect for the last that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _blocks_needed(views, rem, mid, block_size) <= free:
            lo = mid
        else:
            hi = mid
    return lo


class DecodeRun:
    """A replica's pending run of ``steps`` decode-only steps (module docstring).

    Step j of the run is the replica's step number ``first_step + j``; it starts at
    ``starts[j]`` and ends at ``starts[j + 1]``. ``step`` is the step in flight. Requests are
    in ``items`` order; the run is timed lazily, a few dozen steps at a time (most runs end at
    a routed request within a few dozen steps).
    """

    def __init__(self, replica: Replica, items: Items, rem: list[int], steps: int, now: float):
        self.items = items
        self.rem = rem  # output tokens each request has left when the run begins
        self.steps = steps
        self.step = 0
        self.first_step = replica.steps
        self.timing = replica.timing
        self.starts = [now]  # sequential float sums, as stepping one by one adds them
        self.durations: list[float] = []
        # Batch shape of step j: the requests with rem > j, each with context c + 1 + j. Sorted
        # by rem, the requests still running at step j are a suffix: its size, context sum, max.
        n = len(items)
        order = sorted(range(n), key=rem.__getitem__)
        ctx_rev = [items[i][0].view.num_computed + 1 for i in reversed(order)]
        self._n = n
        self._rem_sorted = [rem[i] for i in order]
        # Context sum and max of sorted positions pos..n-1 (position n: none left).
        self._suf_sum = [0, *accumulate(ctx_rev)][::-1]
        self._suf_max = [0, *accumulate(ctx_rev, max)][::-1]
        self._rem_sorted_np = np.array(self._rem_sorted, dtype=np.float64)
        self._suf_sum_np = np.array(self._suf_sum, dtype=np.float64)
        self._suf_max_np = np.array(self._suf_max, dtype=np.float64)

    # -- the step in flight, as the replica's queues would show it -------------------------------
    def outstanding(self) -> int:
        """Requests still running in the step in flight (nothing waits during a run)."""
        return self._n - bisect_right(self._rem_sorted, self.step)

    def load(self) -> ReplicaLoad:
        """The replica's load while the step in flight runs (``Replica.load`` after settling)."""
        j = self.step
        gone = bisect_right(self._rem_sorted, j)  # requests that finished before step j
        active = self._n - gone
        return ReplicaLoad(
            active, 0, self._suf_sum[gone] + j * active, self._suf_max[gone] + j, 0
        )

    def end(self, j: int) -> float:
        """End of step j, timing more steps when needed."""
        while len(self.starts) <= j + 1:
            self._time_more()
        return self.starts[j + 1]

    def _time_more(self) -> None:
        done = len(self.durations)
        j = np.arange(done, min(self.steps, max(16, 4 * done)))
        gone = np.searchsorted(self._rem_sorted_np, j, side="right")
        active = self._n - gone
        X = np.zeros((len(j), N_FEATURES), dtype=np.float64)
        X[:, F_DECODE_REQS] = active
        X[:, F_DECODE_CTX_SUM] = self._suf_sum_np[gone] + j * active
        X[:, F_DECODE_CTX_MAX] = self._suf_max_np[gone] + j
        X[:, F_TOTAL_TOKENS] = active
        times = self.timing.step_times(X, self.first_step + done)
        if not min(times) > 0:
            raise RuntimeError(f"timing model gave a non-positive step time {min(times)}")
        self.durations += times
        t = self.starts[-1]
        starts = self.starts
        for d in times:
            t += d
            starts.append(t)

    # -- settling --------------------------------------------------------------------------------
    def apply(self, replica: Replica, m: int) -> Items:
        """Apply the run's steps 0 .. m-1 to its requests and ``replica`` (tokens, token times,
        late tokens, KV blocks, finished requests retired); returns the items of step m."""
        if m == 0:
            return self.items
        # Plain Python on per-request lists (a run holds a few dozen requests: numpy's per-call
        # cost would dominate). Integer arithmetic, so block counts are exact.
        ends = self.starts[1 : m + 1]  # end of each applied step: the time of its tokens
        bs = replica.block_size
        rest: Items = []
        allocated = 0
        tokens = 0
        for (r, _), q in zip(self.items, self.rem, strict=True):
            v = r.view
            s = q if q < m else m
            g = v.num_generated
            # Token-level lateness of every emitted token: due = min(due0 + (g + j) * tpot, cap).
            # Ends rise and (with tpot >= 0) dues do not fall, so the first and last token often
            # settle it; otherwise count token by token.
            due0, tpot, cap = r.due0, r.tpot, r.cap
            last = ends[s - 1]
            first_due = due0 + g * tpot
            last_due = due0 + (g + s - 1) * tpot
            if tpot >= 0 and last <= (first_due if first_due < cap else cap) + _EPS:
                late = 0
            elif tpot >= 0 and ends[0] > (last_due if last_due < cap else cap) + _EPS:
                late = s
            else:
                late = sum(ends[j] > min(due0 + (g + j) * tpot, cap) + _EPS for j in range(s))
            b = -(-(v.num_computed + s) // bs) - v.num_blocks
            if b > 0:
                v.num_blocks += b
                allocated += b
            v.num_computed += s
            v.num_generated = g + s
            tokens += s
            r.tokens_run += s
            r.late_tokens += late
            r.last_token_s = last
            if v.first_token_s is None:  # its last prompt token was pending: the run emits it
                v.first_token_s = ends[0]
            if r.token_times is not None:
                r.token_times.extend(ends[:s])
            if g + s == r.spec.output_len:
                replica.retire(r)
            else:
                rest.append((r, 1))
        replica.free_blocks -= allocated
        replica.tokens_run += tokens
        replica.steps += m
        replica.fast_forwarded += m
        if len(rest) < len(self.items):
            replica.running = [v for v in replica.running if v.num_blocks > 0]
        return rest
