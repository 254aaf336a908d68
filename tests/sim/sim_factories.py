"""Factories for simulator tests: small workloads and deliberately broken test policies."""

from __future__ import annotations

import copy

from slidingserve.latency import LatencyModel
from slidingserve.policy import Policy, PolicyConfig, SchedulerInput, StepPlan
from slidingserve.slo import TierSet, load_tiers
from slidingserve.workload import RequestSpec, WorkloadConfig, build_workload


def tiers() -> TierSet:
    return load_tiers()


def small_workload(n: int = 40, rate: float = 20.0, seed: int = 0) -> list[RequestSpec]:
    """Synthetic lengths, shortened so tests stay fast."""
    specs = build_workload(WorkloadConfig(rate=rate, num_requests=n, seed=seed), tiers())
    return [
        RequestSpec(s.key, s.arrival_s, 1 + s.prompt_len // 4, 1 + s.output_len // 4, s.tier)
        for s in specs
    ]


def specs_of(rows: list[tuple[float, int, int, str]]) -> list[RequestSpec]:
    return [RequestSpec(i, a, p, o, t) for i, (a, p, o, t) in enumerate(rows)]


class ScriptedPolicy(Policy):
    """Test double: returns the plans a test hands it (not registered, not a baseline)."""

    def __init__(self, latency: LatencyModel, plans: list[StepPlan]):
        super().__init__(PolicyConfig(), latency)
        self.plans = plans
        self.inputs: list[SchedulerInput] = []

    def schedule(self, state: SchedulerInput) -> StepPlan:
        # Views are live objects the host keeps updating: keep copies of what was seen.
        self.inputs.append(
            SchedulerInput(
                state.now_s,
                [copy.copy(v) for v in state.running],
                [copy.copy(v) for v in state.waiting],
                state.kv,
                state.limits,
            )
        )
        return self.plans.pop(0) if self.plans else StepPlan()


ScriptedPolicy.name = "scripted"
