"""Fast-forwarding runs of identical decode-only steps.

Most simulated steps at moderate load are pure decode steps: nothing waits, every running
request is in decode and the policy schedules each of them for one token, preempting nothing.
Until the next arrival (or KV/step limits), the following steps are decode-only too: contexts
grow by one token a step and requests leave as they finish, and a work-conserving policy has
no choice to make (nothing waits, every decode fits), so it re-issues "every running request,
one token". When the policy returns such a plan, the simulator computes the run length ``k``
at once (vectorised latency predictions of the steps' batch shapes, one row per step, with
the batch shrinking as requests finish) and applies the first ``k - 1`` steps directly,
finishing requests (and calling ``policy.forget``) at the right times, without calling the
policy; step ``k`` runs as a normal step with the requests still running (its time is the
same prediction's row k, the batch shape ``step_features`` gives for those requests).

Invariants (exactly what stepping one by one gives, bit for bit, for a policy that schedules
every decode when nothing waits and all fit):
  * step j starts at T_j (sequential float sums, as in normal stepping); only steps with
    T_j < next arrival are collapsed, so every arrival meets the state stepping would give;
  * the KV blocks all k steps could need (ignoring blocks freed by finishing requests) fit in
    the free blocks, so no preemption could have been needed;
  * step k still holds at least one request (k <= the largest remaining output).
The assumption is on the policy (and on the latency model: a row's prediction in a batch is
the one-step prediction, as for RooflineModel); ``SimConfig.fast_forward=False`` turns the trick
off, and tests/sim check that both give identical records for every registered policy. Steps
are timed by the replica's ``TimingModel`` (``step_times``, step numbers from
``replica.steps``): its draws are a pure function of the step number, so noisy and replayed
timing collapse exactly as stepping one by one would time them.

Fixed plans. A policy may declare the first plan of such a run too (``Policy.fixed_decode_steps``):
when nothing waits, every running request is in decode and all of them fit one more token,
it returns "every running request, one token". For such a policy the simulator builds that
step itself (``fixed_decode_items``) instead of calling ``schedule``; ``SimConfig.
skip_fixed_plans=False`` turns this off, and tests/sim check that both give the same steps.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from slidingserve.latency.features import (
    F_DECODE_CTX_MAX,
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_TOTAL_TOKENS,
    N_FEATURES,
)
from slidingserve.policy import StepPlan
from slidingserve.policy.base import decodes_all_fit
from slidingserve.policy.batch import step_features
from slidingserve.sim.replica import Items, Replica

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


def fast_forward(
    replica: Replica, items: Items, now: float, next_arrival_s: float, max_steps: int
) -> tuple[float, Items, int, float | None]:
    """Apply the first k-1 of k decode-only steps.

    Returns (start time of step k, the items step k runs, k - 1, the predicted time of step k
    or None when no step was applied).
    """
    # Plain Python on per-request lists (a run holds a few dozen requests: numpy's per-call
    # cost would dominate); numpy only for the latency model's batch prediction. Integer
    # arithmetic throughout, so block counts and batch shapes are exact.
    n = len(items)
    views = [r.view for r, _ in items]
    rem = [r.spec.output_len - v.num_generated for (r, _), v in zip(items, views, strict=True)]
    K = min(max_steps, max(rem))
    if K <= 1:
        return now, items, 0, None
    # Most runs on a busy fleet end before they start: the next arrival (for any replica)
    # comes before this step ends. Time the step once, as launch would, and hand it over.
    first = replica.timing.step_time(step_features([(r.view, q) for r, q in items]), replica.steps)
    if now + first >= next_arrival_s:
        return now, items, 0, first
    bs = replica.block_size
    need = 0
    for v, q in zip(views, rem, strict=True):
        b = -(-(v.num_computed + (q if q < K else K)) // bs) - v.num_blocks
        if b > 0:
            need += b
    if need > replica.free_blocks:
        return now, items, 0, None
    # Batch shape of step j: the requests with rem > j, each with context c + 1 + j. Sorted by
    # rem, the requests still running at step j are a suffix: its size, context sum and max.
    order = sorted(range(n), key=rem.__getitem__)
    ctx_rev = [views[i].num_computed + 1 for i in reversed(order)]
    rem_sorted = np.array([rem[i] for i in order], dtype=np.float64)
    # Context sum and max of sorted positions pos..n-1 (position n: none left).
    suf_sum = np.array([0, *accumulate(ctx_rev)][::-1], dtype=np.float64)
    suf_max = np.array([0, *accumulate(ctx_rev, max)][::-1], dtype=np.float64)
    # Grow the horizon geometrically: most runs end at an arrival within a few dozen steps.
    # Each round predicts only the new steps' rows (a row's prediction is its own: the same
    # assumption as timing the collapsed steps by one batch prediction at all).
    durations: list[float] = []
    starts = [now]  # step start times: sequential float sums, as stepping one by one adds them
    t = now
    horizon = min(K, 32)
    while True:
        j = np.arange(len(durations), horizon)
        gone = np.searchsorted(rem_sorted, j, side="right")  # requests finished before step j
        active = n - gone
        X = np.zeros((len(j), N_FEATURES), dtype=np.float64)
        X[:, F_DECODE_REQS] = active
        X[:, F_DECODE_CTX_SUM] = suf_sum[gone] + j * active
        X[:, F_DECODE_CTX_MAX] = suf_max[gone] + j
        X[:, F_TOTAL_TOKENS] = active
        durations += replica.timing.step_times(X, replica.steps + len(durations))
        i = len(starts)
        while t < next_arrival_s and i < horizon:  # up to the first start at/after the arrival
            t += durations[i - 1]
            starts.append(t)
            i += 1
        if t >= next_arrival_s:
            k = len(starts) - 1  # steps starting before the arrival (starts rise)
            break
        if horizon == K:
            k = horizon
            break
        horizon = min(K, horizon * 4)
    m = k - 1  # steps applied here
    if m <= 0:
        return now, items, 0, None
    ends = starts[1:k]  # end of each collapsed step: the time of the tokens it emits
    rest: Items = []
    allocated = 0
    tokens = 0
    for (r, _), v, q in zip(items, views, rem, strict=True):
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
        if v.first_token_s is None:  # its last prompt token was pending: this run emits the first
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
    if len(rest) < n:
        replica.running = [v for v in replica.running if v.num_blocks > 0]
    return starts[m], rest, m, durations[m]
