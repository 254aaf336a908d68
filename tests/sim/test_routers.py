"""Routers (pow2, least-work, slack on a mixed fleet), fleets, and a replica failing mid-run."""

from __future__ import annotations

import dataclasses
import random

import pytest
from sim_factories import ScriptedPolicy, small_workload, specs_of, tiers

from slidingserve.latency import RooflineModel, ScaledLatency
from slidingserve.metrics import summarize
from slidingserve.policy import HostLimits, RequestView
from slidingserve.sim import SimConfig, make_router, router_names, simulate
from slidingserve.sim.fleet import fleet_latencies
from slidingserve.sim.replica import Replica
from slidingserve.sim.request import SimRequest

BASE = RooflineModel()


def _replica(i: int, latency=BASE) -> Replica:
    return Replica(
        i, ScriptedPolicy(latency, []), latency, 10_000, 16, HostLimits(256, 16384, 32768)
    )


def _request(
    key: int, prompt: int = 100, tier: str = "interactive", now: float = 0.0
) -> SimRequest:
    spec = specs_of([(now, prompt, 10, tier)])[0]
    spec = type(spec)(key, now, prompt, 10, tier)
    view = RequestView(key, tiers()[tier], now, prompt, 0, 0)
    return SimRequest(spec=spec, view=view)


def _fleet(queued: list[list[int]], latencies=None) -> list[Replica]:
    """Replica i holds waiting requests with the prompts ``queued[i]``."""
    reps = [_replica(i, (latencies or [BASE] * len(queued))[i]) for i in range(len(queued))]
    key = 1000
    for rep, prompts in zip(reps, queued, strict=True):
        for p in prompts:
            rep.enqueue(_request(key, p))
            key += 1
    return reps


def test_registry_names_the_four_routers_and_keeps_the_alias():
    assert {"round-robin", "pow2", "least-work", "slack", "slo-aware", "least-loaded"} <= set(
        router_names()
    )
    assert type(make_router("slo-aware")) is type(make_router("slack"))
    with pytest.raises(ValueError, match="unknown router 'nearest'"):
        make_router("nearest")


def test_pow2_takes_the_shorter_queue_of_the_two_it_samples():
    reps = _fleet([[10] * 3, [], [10] * 2, [10]])
    router = make_router("pow2", seed=7)
    mirror = random.Random(7)  # Ray's sampling: i in [0, n), j in [0, n - 1) shifted past i
    picks = set()
    for _ in range(50):
        i = mirror.randrange(4)
        j = mirror.randrange(3)
        j += j >= i
        want = j if reps[j].outstanding < reps[i].outstanding else i
        got = router.route(_request(0), reps, 0.0)
        assert got == want
        picks.add(got)
    assert 0 not in picks  # the longest queue loses every pair it is in
    assert len(picks) == 3  # but pow2 is not least-loaded: the others all get some


def test_pow2_is_deterministic_by_seed():
    reps = _fleet([[]] * 8)

    def picks(seed: int) -> list[int]:
        router = make_router("pow2", seed=seed)
        return [router.route(_request(0), reps, 0.0) for _ in range(40)]

    assert picks(3) == picks(3)
    assert picks(3) != picks(4)


def test_least_work_counts_tokens_not_requests():
    reps = _fleet([[1000], [100, 100, 100], [600, 600]])
    assert make_router("least-work").route(_request(0), reps, 0.0) == 1
    assert make_router("least-loaded").route(_request(0), reps, 0.0) == 0


def test_slack_prefers_the_fast_replica_when_loads_are_equal():
    slow = ScaledLatency(BASE, 2.0)
    for queued in ([[], []], [[2000, 500], [2000, 500]]):
        reps = _fleet(queued, latencies=[slow, BASE])  # the slow one first: index breaks no tie
        assert make_router("slack").route(_request(0, 4000), reps, 0.0) == 1
    # a fast replica with much more work queued loses to an idle slow one
    reps = _fleet([[], [8000, 8000]], latencies=[slow, BASE])
    assert make_router("slack").route(_request(0, 4000), reps, 0.0) == 0


def test_slack_counts_only_the_work_served_before_the_request():
    # Replica 0 holds 12,000 batch tokens, replica 1 3,000 interactive ones: the engine serves
    # higher tiers first, so an interactive request starts sooner on replica 0 and a batch
    # request sooner on replica 1.
    reps = _fleet([[], []])
    for key, (rep, tier, prompt) in enumerate(
        [(0, "batch", 6000), (0, "batch", 6000), (1, "interactive", 3000)]
    ):
        reps[rep].enqueue(_request(2000 + key, prompt, tier))
    assert reps[0].load().queued_by_priority == (0, 0, 12000)
    assert reps[0].load().tokens_ahead(0) == 0 and reps[0].load().tokens_ahead(2) == 12000
    assert make_router("slack").route(_request(0, 500, "interactive"), reps, 0.0) == 0
    assert make_router("slack").route(_request(1, 500, "batch"), reps, 0.0) == 1


def test_slack_balances_end_to_end_tiers_among_replicas_that_meet_their_ttft():
    # replica 0: two short prompts queued (more slack, 2 requests); replica 1: one long prompt
    reps = _fleet([[50, 50], [6000]])
    router = make_router("slack")
    assert router.route(_request(0, 100, "interactive"), reps, 0.0) == 0  # most slack
    assert router.route(_request(1, 100, "standard"), reps, 0.0) == 1  # fewest requests
    # an end-to-end tier whose TTFT target replica 1's queue would miss: the one that meets it
    req = _request(2, 100, "standard")
    tight = dataclasses.replace(tiers()["standard"], ttft_s=0.05)
    req.view = RequestView(2, tight, 0.0, 100, 0, 0)
    assert router.route(req, reps, 0.0) == 0
    # ... and when neither meets it, the most slack
    req.view = RequestView(2, dataclasses.replace(tight, ttft_s=1e-4), 0.0, 100, 0, 0)
    assert router.route(req, reps, 0.0) == 0


def test_load_snapshot_follows_the_replica():
    rep = _fleet([[100]])[0]
    assert rep.load().queued_prefill_tokens == 100
    rep.enqueue(_request(1, 50))
    assert rep.load().queued_prefill_tokens == 150 and rep.load().waiting == 2


def test_heterogeneous_fleet_runs_the_slow_half_slower():
    cfg = SimConfig(replicas=4, fleet="heterogeneous", slow_factor=2.0)
    lats = fleet_latencies(cfg, BASE)
    assert [lat is BASE for lat in lats] == [True, False, True, False]
    # the same lone request on replica 0 (fast) then replica 1 (slow): twice the TTFT
    rows = [(0.0, 2000, 2, "interactive"), (10.0, 2000, 2, "interactive")]
    result = simulate(
        specs_of(rows), tiers(), "vllm-fcfs", SimConfig(replicas=2, fleet="heterogeneous")
    )
    fast, slow = (r.first_token_s - r.arrival_s for r in result.records)
    assert slow == pytest.approx(2 * fast, rel=1e-9)
    assert result.stats["fleet"] == "heterogeneous"


@pytest.mark.parametrize("router", ["round-robin", "pow2", "least-work", "slack"])
def test_failure_reroutes_unstarted_and_loses_started(router):
    specs = small_workload(120, rate=60.0)
    t_fail = specs[60].arrival_s
    cfg = SimConfig(
        replicas=3, router=router, fail_replica_at_s=t_fail, fail_replica=1, max_num_seqs=4
    )  # a small engine: requests queue, so some wait at t_fail
    result = simulate(specs, tiers(), "vllm-fcfs", cfg)  # conservation is asserted inside
    s = result.stats
    assert s["failed_replica"] == 1
    assert s["lost"] > 0 and s["rerouted"] > 0
    unfinished = [r for r in result.records if not r.finished]
    assert len(unfinished) == s["lost"]  # every other request, rerouted ones included, finished
    assert all(r.arrival_s < t_fail for r in unfinished)
    summary = summarize(result.records, tiers())
    violated = round((1 - summary["overall"]["slo_attainment"]) * len(specs))
    assert violated >= s["lost"]


def test_failed_replica_gets_nothing_after_it_dies():
    reps = _fleet([[100], [100], [100]])
    started = next(iter(reps[1].requests.values()))
    started.tokens_run = started.view.num_computed = 50  # as if a chunk had run
    reps[1].enqueue(_request(7, 30))
    unstarted, lost = reps[1].fail()
    assert [r.view.key for r in unstarted] == [7] and lost == [started] and started.lost
    assert not reps[1].alive and reps[1].outstanding == 0
    assert reps[1].free_blocks == reps[1].total_blocks


def test_failure_needs_two_replicas_and_a_real_index():
    with pytest.raises(ValueError, match="needs at least 2 replicas"):
        SimConfig(replicas=1, fail_replica_at_s=1.0)
    with pytest.raises(ValueError, match="fail_replica 3 is not a replica"):
        SimConfig(replicas=3, fail_replica=3)
