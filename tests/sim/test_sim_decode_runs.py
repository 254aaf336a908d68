"""Pending decode runs on a fleet: the same records as stepping one by one, whatever settles them
(a routed request, a failure, the monitor, the drain horizon), and a run's analytic load is
the load its replica shows once settled."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
from sim_factories import small_workload, specs_of, tiers

from slidingserve.sim import SimConfig, ViolationMonitor, simulate
from slidingserve.sim import simulator as simulator_module
from slidingserve.sim.config import TimingConfig
from slidingserve.sim.replica import Replica
from slidingserve.sim.request import SimRequest
from slidingserve.sim.routers import Router, make_router

STEPWISE = {"fast_forward": False, "skip_fixed_plans": False}  # every step asks the policy


def _both(specs, policy: str, cfg: SimConfig, **kwargs):
    fast = simulate(specs, tiers(), policy, cfg, **kwargs)
    slow = simulate(specs, tiers(), policy, cfg.model_copy(update=STEPWISE), **kwargs)
    return fast, slow


def _assert_identical(fast, slow) -> None:
    assert fast.stats["fast_forwarded_steps"] > 0
    assert slow.stats["fast_forwarded_steps"] == 0
    assert fast.stats["steps"] == slow.stats["steps"]
    assert fast.stats["tokens_run"] == slow.stats["tokens_run"]
    assert fast.records == slow.records
    assert fast.end_s == slow.end_s


@pytest.mark.parametrize("router", ["round-robin", "least-loaded", "pow2", "least-work", "slack"])
@pytest.mark.parametrize("policy", ["slidingserve", "vllm-fcfs", "sarathi"])
def test_fleet_records_match_stepping_one_by_one(router, policy):
    # Long decodes at a rate where each replica gets a request every few dozen steps: runs are
    # cut by routed requests, and some end on their own.
    specs = small_workload(150, rate=25.0, seed=11)
    cfg = SimConfig(replicas=4, router=router, record_token_times=True)
    _assert_identical(*_both(specs, policy, cfg))


@pytest.mark.parametrize("router", ["pow2", "slack"])
def test_failure_settles_the_dead_replicas_run_as_stepping_would(router):
    specs = small_workload(150, rate=25.0, seed=12)
    cfg = SimConfig(
        replicas=3,
        router=router,
        record_token_times=True,
        fail_replica_at_s=specs[70].arrival_s + 0.013,
        fail_replica=1,
    )
    fast, slow = _both(specs, "slidingserve", cfg)
    _assert_identical(fast, slow)
    assert fast.stats["lost"] > 0 and fast.stats["lost"] == slow.stats["lost"]
    assert fast.stats["rerouted"] == slow.stats["rerouted"]


def test_noisy_timing_on_a_fleet_matches_stepping():
    specs = small_workload(120, rate=25.0, seed=13)
    timing = TimingConfig(kind="noise", noise_sigma=0.3, seed=4)
    cfg = SimConfig(replicas=3, router="slack", record_token_times=True, timing=timing)
    _assert_identical(*_both(specs, "slidingserve", cfg))


@pytest.mark.parametrize("policy", ["slidingserve", "vllm-fcfs"])
def test_kv_short_runs_stop_where_blocks_run_out_and_match_stepping(policy):
    # Few blocks: a run is cut to the steps whose blocks fit, then the replica plans again.
    specs = small_workload(80, rate=20.0, seed=14)
    cfg = SimConfig(replicas=2, router="least-work", record_token_times=True, num_blocks=150)
    _assert_identical(*_both(specs, policy, cfg))
    # 24 blocks of 16 tokens for 12 requests decoding at once: decodes outgrow the KV cache
    # with nothing arriving, and stepping preempts where the run must stop.
    specs = specs_of([(0.001 * i, 120 + 7 * i, 40 + i, "standard") for i in range(12)])
    fast, slow = _both(specs, policy, SimConfig(record_token_times=True, num_blocks=24))
    _assert_identical(fast, slow)
    assert fast.stats["preemptions"] == slow.stats["preemptions"] > 0


def test_monitor_and_drain_horizon_settle_runs_as_stepping_would():
    specs = small_workload(120, rate=25.0, seed=15)
    cfg = SimConfig(replicas=3, router="slack", record_token_times=True, drain_s=0.4)

    def monitored():  # stops once the first 40 requests finished, others still decoding
        return ViolationMonitor(range(40), tiers(), max_violations=1000)

    fast = simulate(specs, tiers(), "slidingserve", cfg, monitor=monitored(), monitor_every_s=0.3)
    slow = simulate(specs, tiers(), "slidingserve", cfg.model_copy(update=STEPWISE),
                    monitor=monitored(), monitor_every_s=0.3)
    assert fast.stats["stopped_early"]
    _assert_identical(fast, slow)
    horizon = simulate(specs, tiers(), "slidingserve", cfg)
    horizon_slow = simulate(specs, tiers(), "slidingserve", cfg.model_copy(update=STEPWISE))
    assert horizon.stats["stopped_at_horizon"]
    _assert_identical(horizon, horizon_slow)


class _CheckingRouter(Router):
    """Routes as the slack router, after checking every pending run's load against a settled
    copy of its replica."""

    name = "checking"

    def __init__(self) -> None:
        super().__init__(0)
        self.inner = make_router("slack")
        self.checked = 0

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        for rep in replicas:
            if rep.run is None:
                continue
            load, outstanding, end = rep.load(), rep.outstanding, rep.step_end_s
            settled = copy.deepcopy(rep)
            settled.settle_run()
            assert settled.run is None and settled.busy
            assert settled.load() == load
            assert settled.outstanding == outstanding
            assert settled.step_end_s == end
            self.checked += 1
        return self.inner.route(req, replicas, now)


def test_pending_runs_show_the_load_their_settled_replica_shows(monkeypatch):
    router = _CheckingRouter()
    monkeypatch.setattr(simulator_module, "make_router", lambda name, seed: router)
    specs = small_workload(60, rate=25.0, seed=16)
    simulate(specs, tiers(), "slidingserve", SimConfig(replicas=3))
    assert router.checked > 0
