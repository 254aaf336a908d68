"""``vllm-fcfs``: vLLM v1's default scheduler (chunked prefill, FCFS).

Mirrors ``vllm/v1/core/sched/scheduler.py``: running requests first, in the host's order, each
taking ``min(pending, tokens left)``; when a running request's KV blocks do not fit, the *last*
running request is preempted (freed, back to waiting, recomputed later) until it fits or the
request preempts itself. Then, only if nothing was preempted this step, waiting requests in
arrival order (preempted ones keep their original arrival, so they come first, as vLLM puts them
at the queue's front) each take a chunk of their prefill; the first one whose blocks or sequence
slot do not fit stops admission (vLLM does not skip ahead in FCFS mode). A waiting request is
admitted only when the KV blocks of its whole sequence (prompt plus the tokens it has generated,
up to the model length) are free, though only its chunk is allocated: vLLM's
``scheduler_reserve_full_isl``, on by default (its watermark is 0 by default, so none is kept).
"""

from __future__ import annotations

from collections.abc import Callable

from slidingserve.policy.base import register_policy
from slidingserve.policy.fixed_budget import FixedBudgetPolicy
from slidingserve.policy.packing import BudgetPacker, pending_tokens
from slidingserve.policy.types import RequestView, SchedulerInput


def last_index(running: list[RequestView]) -> int:
    return len(running) - 1


def schedule_running_vllm(
    running: list[RequestView],
    packer: BudgetPacker,
    pick_victim: Callable[[list[RequestView]], int] = last_index,
) -> bool:
    """vLLM's running loop; preempts ``running[pick_victim(running)]`` while KV is short.

    Returns True if anything was preempted. ``running`` is consumed as vLLM consumes its list;
    a victim that was already scheduled this step is taken out of the step again.
    """
    preempted = False
    i = 0
    while i < len(running):
        req = running[i]
        n = packer.token_cap(req)
        if n <= 0:
            i += 1
            continue
        while packer.kv_short(req, n):
            v = pick_victim(running)
            victim = running.pop(v)
            packer.preempt_request(victim)
            preempted = True
            if victim is req:
                break
            if v < i:
                i -= 1
        else:
            packer.add_fitting(req, n)
            i += 1
    return preempted


def admit_waiting_in_order(waiting: list[RequestView], packer: BudgetPacker,
                           max_model_len: int) -> None:
    """Admit waiting requests in order, each one chunk; stop at the first that does not fit,
    its whole sequence counted against the free blocks (module docstring)."""
    for req in waiting:
        n = packer.token_cap(req)
        if n <= 0 or packer.seqs_left <= 0:
            break
        full = min(pending_tokens(req), max_model_len - req.num_computed)
        if packer.kv_short(req, max(n, full)):
            break
        packer.add(req, n)


@register_policy("vllm-fcfs")
class VllmFcfs(FixedBudgetPolicy):
    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        preempted = schedule_running_vllm(list(state.running), packer)
        if not preempted:
            waiting = sorted(state.waiting, key=lambda r: r.arrival_s)
            admit_waiting_in_order(waiting, packer, state.limits.max_model_len)
