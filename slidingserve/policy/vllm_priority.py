"""``vllm-priority``: vLLM v1's scheduler with its priority policy, the SLO tier as priority.

As in vLLM: running requests first in the host's order; when KV is short the victim is the
running request with the largest ``(priority, arrival)`` (least important, then newest), even
one already scheduled this step (it is taken out again). The waiting queue is ordered by
``(tier priority, arrival)``; admission stops at the first request that does not fit (its whole
sequence counted against the free blocks, as ``vllm-fcfs`` says), and
nothing is admitted in a step that preempted. Waiting requests never preempt running ones
(vLLM v1 does not either).
"""

from __future__ import annotations

from slidingserve.policy.base import register_policy
from slidingserve.policy.fixed_budget import FixedBudgetPolicy
from slidingserve.policy.packing import BudgetPacker
from slidingserve.policy.types import RequestView, SchedulerInput
from slidingserve.policy.vllm_fcfs import admit_waiting_in_order, schedule_running_vllm


def priority_key(req: RequestView) -> tuple[int, float]:
    return (req.tier.priority, req.arrival_s)


def least_important_index(running: list[RequestView]) -> int:
    return max(range(len(running)), key=lambda i: priority_key(running[i]))


@register_policy("vllm-priority")
class VllmPriority(FixedBudgetPolicy):
    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        preempted = schedule_running_vllm(list(state.running), packer, least_important_index)
        if not preempted:
            admit_waiting_in_order(sorted(state.waiting, key=priority_key), packer,
                                   state.limits.max_model_len)
