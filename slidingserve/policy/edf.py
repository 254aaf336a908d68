"""``edf``: earliest (next) deadline first under a fixed token budget.

Every request, running or waiting, is keyed by the due time of its next token
(``RequestView.next_token_deadline``: the TTFT deadline before the first token, the token-level
deadline after it, both capped by the end-to-end deadline). The step is filled in that order,
prefills chunked to what the budget leaves. A running request short of KV preempts running
requests with the latest deadlines; a waiting request that does not fit is skipped (EDF lets
later deadlines through).
"""

from __future__ import annotations

from slidingserve.policy.base import register_policy
from slidingserve.policy.fixed_budget import FixedBudgetPolicy
from slidingserve.policy.packing import BudgetPacker, make_room
from slidingserve.policy.types import RequestView, SchedulerInput


def deadline_key(req: RequestView) -> tuple[float, float]:
    return (req.next_token_deadline(), req.arrival_s)


@register_policy("edf")
class EarliestDeadlineFirst(FixedBudgetPolicy):
    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        running_keys = {r.key for r in state.running}
        victims = sorted(state.running, key=deadline_key)
        for req in sorted(state.running + state.waiting, key=deadline_key):
            if packer.tokens_left <= 0 or packer.seqs_left <= 0:
                break
            n = packer.token_cap(req)
            if n <= 0 or packer.is_planned(req.key):
                continue
            if req.key in running_keys:
                make_room(packer, req, n, victims)
            packer.add_fitting(req, n)
