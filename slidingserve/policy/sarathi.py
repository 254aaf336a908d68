"""``sarathi``: Sarathi-Serve's stall-free batching under a fixed token budget.

Order of filling: every running decode first (one token each, so ongoing decodes never stall
behind a prefill), then the running requests part-way through a prefill (chunked to what the
budget leaves), then new prefills from the waiting queue in arrival order, chunked likewise;
admission stops at the first waiting request that does not fit (Sarathi-Serve's block manager
admits a request only when its whole prompt's blocks are free: ``vllm-fcfs``'s rule) and is
skipped in a step that preempted. When KV is short the last request of that running order is
preempted (as in Sarathi-Serve, whose scheduler preempts from the tail of its running list).
"""

from __future__ import annotations

from slidingserve.policy.base import register_policy
from slidingserve.policy.fixed_budget import FixedBudgetPolicy
from slidingserve.policy.packing import BudgetPacker
from slidingserve.policy.types import SchedulerInput
from slidingserve.policy.vllm_fcfs import admit_waiting_in_order, schedule_running_vllm


@register_policy("sarathi")
class Sarathi(FixedBudgetPolicy):
    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        decodes = [r for r in state.running if not r.in_prefill]
        prefills = [r for r in state.running if r.in_prefill]
        preempted = schedule_running_vllm(decodes + prefills, packer)
        if not preempted:
            admit_waiting_in_order(sorted(state.waiting, key=lambda r: r.arrival_s), packer,
                                   state.limits.max_model_len)
