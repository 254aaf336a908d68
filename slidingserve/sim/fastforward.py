"""Fast-forwarding runs of identical decode-only steps.

Most simulated steps at moderate load are pure decode steps: nothing waits, every running
request is in decode and the policy schedules each of them for one token, preempting nothing.
Until the next arrival (or KV/step limits), the following steps are decode-only too: contexts
grow by one token a step and requests leave as they finish, and a work-conserving policy has
no choice to make (nothing waits, every decode fits), so it re-issues "every running request,
one token". When the policy returns such a plan, the simulator computes the run length ``k``
at once (one vectorised latency prediction for all ``k`` steps, with the batch shrinking as
requests finish) and applies the first ``k - 1`` steps directly, finishing requests (and
calling ``policy.forget``) at the right times, without calling the policy; step ``k`` runs as
a normal step with the requests still running.

Invariants (exactly what stepping one by one gives, bit for bit, for a policy that schedules
every decode when nothing waits and all fit):
  * step j starts at T_j (sequential float sums, as in normal stepping); only steps with
    T_j < next arrival are collapsed, so every arrival meets the state stepping would give;
  * the KV blocks all k steps could need (ignoring blocks freed by finishing requests) fit in
    the free blocks, so no preemption could have been needed;
  * step k still holds at least one request (k <= the largest remaining output).
The assumption is on the policy; ``SimConfig.fast_forward=False`` turns the trick off, and
tests/sim check that both give identical records for every registered policy.

Fixed plans. A policy may declare the first plan of such a run too (``Policy.fixed_decode_steps``):
when nothing waits, every running request is in decode and all of them fit one more token,
it returns "every running request, one token". For such a policy the simulator builds that
step itself (``fixed_decode_items``) instead of calling ``schedule``; ``SimConfig.
skip_fixed_plans=False`` turns this off, and tests/sim check that both give the same steps.
"""

from __future__ import annotations

from itertools import chain

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
) -> tuple[float, Items, int]:
    """Apply the first k-1 of k decode-only steps.

    Returns (start time of step k, the items step k runs, k - 1).
    """
    n = len(items)
    K = min(max_steps, max(r.spec.output_len - r.view.num_generated for r, _ in items))
    if K <= 1:
        return now, items, 0
    # One matrix of per-request state: computed, remaining output, blocks, generated, deadlines.
    rows = (
        (
            v.num_computed,
            r.spec.output_len - v.num_generated,
            v.num_blocks,
            v.num_generated,
            r.due0,
            r.tpot,
            r.cap,
        )
        for r, _ in items
        for v in (r.view,)
    )
    A = np.fromiter(chain.from_iterable(rows), np.float64, 7 * n).reshape(n, 7)
    c, rem, nb, g, due0, tpot, cap = A.T
    bs = replica.block_size
    if (
        float(np.maximum(np.ceil((c + np.minimum(rem, K)) / bs) - nb, 0).sum())
        > replica.free_blocks
    ):
        return now, items, 0
    # Batch shape of step j: the requests with rem > j, each with context c + 1 + j.
    order = np.argsort(rem, kind="stable")
    rem_sorted = rem[order]
    ctx_sorted = (c + 1.0)[order]
    prefix = np.concatenate(([0], np.cumsum(ctx_sorted)))
    sufmax = np.concatenate((np.maximum.accumulate(ctx_sorted[::-1])[::-1], [0]))
    # Grow the horizon geometrically: most runs end at an arrival within a few dozen steps.
    horizon = min(K, 32)
    while True:
        j = np.arange(horizon)
        gone = np.searchsorted(rem_sorted, j, side="right")  # requests finished before step j
        active = n - gone
        X = np.zeros((horizon, N_FEATURES), dtype=np.float64)
        X[:, F_DECODE_REQS] = active
        X[:, F_DECODE_CTX_SUM] = (prefix[-1] - prefix[gone]) + j * active
        X[:, F_DECODE_CTX_MAX] = sufmax[gone] + j
        X[:, F_TOTAL_TOKENS] = active
        durations = replica.latency.predict_features(X)
        starts = np.add.accumulate(np.concatenate(([now], durations[:-1])))
        if horizon == K or starts[-1] >= next_arrival_s:
            break
        horizon = min(K, horizon * 4)
    k = int(np.searchsorted(starts, next_arrival_s, side="left"))
    m = k - 1  # steps applied here
    if m <= 0:
        return now, items, 0
    ends = starts[1:k]  # end of each collapsed step: the time of the tokens it emits
    steps_run = np.minimum(rem, m)
    # Token-level lateness of every emitted token: due = min(due0 + (g + j) * tpot, cap).
    jm = np.arange(m)
    due = np.minimum(due0[:, None] + (g[:, None] + jm) * tpot[:, None], cap[:, None])
    late = ((ends[None, :] > due + _EPS) & (jm[None, :] < steps_run[:, None])).sum(axis=1)
    new_blocks = np.maximum(np.ceil((c + steps_run) / bs) - nb, 0).astype(np.int64).tolist()
    steps_list = steps_run.astype(np.int64).tolist()
    late_list = late.tolist()
    ends_list = ends.tolist()
    rest: Items = []
    for i, (r, _) in enumerate(items):
        v = r.view
        s = steps_list[i]
        v.num_computed += s
        v.num_generated += s
        v.num_blocks += new_blocks[i]
        r.tokens_run += s
        r.late_tokens += late_list[i]
        r.last_token_s = ends_list[s - 1]
        if r.token_times is not None:
            r.token_times.extend(ends_list[:s])
        if v.num_generated == r.spec.output_len:
            replica.retire(r)
        else:
            rest.append((r, 1))
    replica.free_blocks -= sum(new_blocks)
    replica.tokens_run += sum(steps_list)
    replica.steps += m
    if len(rest) < n:
        replica.running = [v for v in replica.running if v.num_blocks > 0]
    return float(starts[m]), rest, m
