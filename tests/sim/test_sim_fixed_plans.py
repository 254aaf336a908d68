"""Fixed decode plans: a policy declaring ``fixed_decode_steps`` is not asked for them."""

from __future__ import annotations

import pytest
from sim_factories import small_workload, tiers

from slidingserve.latency import RooflineModel
from slidingserve.policy import make_policy, policy_names
from slidingserve.sim import SimConfig, simulate
from slidingserve.sim.fastforward import fixed_decode_items
from slidingserve.sim.replica import Replica

DECLARING = [n for n in policy_names() if make_policy(n, RooflineModel()).fixed_decode_steps]
CONFIGS = [
    SimConfig(record_token_times=True),
    SimConfig(record_token_times=True, num_blocks=400),  # KV short: some steps do not fit
    SimConfig(record_token_times=True, max_num_seqs=3),
]


def test_slidingserve_declares_fixed_decode_steps():
    assert "slidingserve" in DECLARING


@pytest.mark.parametrize("policy", DECLARING)
@pytest.mark.parametrize("config", CONFIGS)
def test_declared_plans_are_what_the_policy_returns(policy, config, monkeypatch):
    """Asked anyway, the policy returns the fixed plan in every state the simulator skips."""
    checked = []
    plan = Replica.plan

    def checking_plan(rep: Replica, now: float):
        fixed = fixed_decode_items(rep)
        got = plan(rep, now)
        if fixed is not None:
            assert got.preempt == []
            assert sorted(got.scheduled) == sorted((r.view.key, n) for r, n in fixed)
            checked.append(now)
        return got

    monkeypatch.setattr(Replica, "plan", checking_plan)
    no_skip = config.model_copy(update={"skip_fixed_plans": False})
    result = simulate(small_workload(80, rate=12.0, seed=5), tiers(), policy, no_skip)
    assert result.stats["skipped_plans"] == 0
    assert checked  # some states were skippable


@pytest.mark.parametrize("policy", DECLARING)
@pytest.mark.parametrize("config", CONFIGS)
def test_skipping_fixed_plans_gives_identical_records(policy, config):
    specs = small_workload(80, rate=12.0, seed=6)
    skip = simulate(specs, tiers(), policy, config)
    ask = simulate(specs, tiers(), policy, config.model_copy(update={"skip_fixed_plans": False}))
    assert skip.stats["skipped_plans"] > 0
    assert skip.stats["policy_calls"] + skip.stats["skipped_plans"] == ask.stats["policy_calls"]
    assert skip.stats["steps"] == ask.stats["steps"]
    assert skip.records == ask.records
    assert skip.end_s == ask.end_s


def test_policies_that_do_not_declare_are_always_asked():
    specs = small_workload(40, rate=12.0, seed=7)
    undeclared = [n for n in policy_names() if n not in DECLARING]
    assert undeclared
    for name in undeclared:
        assert simulate(specs, tiers(), name).stats["skipped_plans"] == 0
