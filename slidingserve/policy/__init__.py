"""Scheduling policies: SlidingServe and its baselines, one registry, no engine imports."""

from slidingserve.policy.base import (
    Policy,
    PolicyConfig,
    make_policy,
    policy_config,
    policy_names,
    register_policy,
)
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput, StepPlan

__all__ = [
    "HostLimits",
    "KVState",
    "Policy",
    "PolicyConfig",
    "RequestView",
    "SchedulerInput",
    "StepPlan",
    "make_policy",
    "policy_config",
    "policy_names",
    "register_policy",
]
