"""Shared base of the fixed-token-budget baselines (vLLM, Sarathi-Serve, EDF).

They differ only in the order they fill the step; the budget, its validation and the
``token_budget`` property that the capacity harness sweeps live here once.
"""

from __future__ import annotations

from pydantic import Field

from slidingserve.latency import LatencyModel
from slidingserve.policy.base import Policy, PolicyConfig
from slidingserve.policy.batch import predict_plan
from slidingserve.policy.packing import BudgetPacker
from slidingserve.policy.types import SchedulerInput, StepPlan


class FixedBudgetConfig(PolicyConfig):
    budget: int = Field(default=2048, ge=1, le=1 << 20)  # tokens per step (max_num_batched_tokens)


class FixedBudgetPolicy(Policy):
    """Template: ``schedule`` builds the packer and the prediction, subclasses ``fill`` it."""

    config_cls = FixedBudgetConfig
    config: FixedBudgetConfig

    def __init__(self, config: FixedBudgetConfig, latency: LatencyModel):
        super().__init__(config, latency)

    @property
    def token_budget(self) -> int:
        return self.config.budget

    def schedule(self, state: SchedulerInput) -> StepPlan:
        packer = BudgetPacker.for_step(state, self.config.budget)
        self.fill(state, packer)
        return packer.plan(predict_plan(self.latency, state, packer.scheduled))

    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        raise NotImplementedError
