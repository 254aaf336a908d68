import itertools
import time
from typing import Any

import pytest

from slidingserve.serve.load import ReplicaLoad
from slidingserve.serve.router import RouteQuery, rank_by_slack


def load(name, waiting=None, queue=0, per_tok=1e-3, step=0.01, ts=None):
    return ReplicaLoad(
        ts=time.time() if ts is None else ts,
        replica=name,
        queue_len=queue,
        running=0,
        waiting_tokens=waiting or {},
        s_per_prefill_token=per_tok,
        step_s=step,
    )


def test_stats_round_trip_and_format_guard():
    a = load("a", {0: 10, 2: 30})
    assert ReplicaLoad.from_stats(a.to_stats()) == a
    assert ReplicaLoad.from_stats({}) is None
    assert ReplicaLoad.from_stats({**a.to_stats(), "format": 99}) is None


def test_priority_sees_only_backlog_at_or_above_it():
    a = load("a", {0: 100, 1: 1000, 2: 5000})
    assert a.tokens_ahead(0) == 100 and a.tokens_ahead(1) == 1100 and a.tokens_ahead(2) == 6100
    assert a.predicted_ttft_s(0, 50) == pytest.approx(0.01 + 150e-3)


def test_most_slack_first_and_tier_matters():
    # a has a big low-priority backlog, b a small high-priority one.
    a = load("a", {2: 4000})
    b = load("b", {0: 500})
    q_interactive = RouteQuery(priority=0, ttft_target_s=6.0, prompt_len=100)
    q_batch = RouteQuery(priority=2, ttft_target_s=1800.0, prompt_len=100)
    assert rank_by_slack([("a", a), ("b", b)], q_interactive) == ["a", "b"]
    assert rank_by_slack([("a", a), ("b", b)], q_batch) == ["b", "a"]


def test_routed_tokens_shift_the_choice():
    a, b = load("a"), load("b", {0: 200})
    q = RouteQuery(0, 6.0, 10)
    assert rank_by_slack([("a", a), ("b", b)], q)[0] == "a"
    assert rank_by_slack([("a", a), ("b", b)], q, {"a": 500})[0] == "b"


def test_ranking_matches_brute_force():
    loads = [
        load(f"r{i}", {p: (i * 37 + p * 11) % 90 for p in range(3)}, queue=i % 3) for i in range(5)
    ]
    for prio, plen in itertools.product(range(3), (1, 64)):
        q = RouteQuery(prio, 6.0, plen)
        ranked = rank_by_slack([(x.replica, x) for x in loads], q)
        slacks = [next(x for x in loads if x.replica == k).slack_s(prio, 6.0, plen) for k in ranked]
        assert slacks == sorted(slacks, reverse=True)
        assert sorted(ranked) == sorted(x.replica for x in loads)


def test_a_resent_request_avoids_the_replica_that_failed_it():
    """The router leaves out the replicas a request's ``avoid`` names, even when their (last)
    stats look best, and falls back to them only when nothing else is left."""
    import asyncio
    from types import SimpleNamespace

    from ray.serve._private.common import (
        DeploymentHandleSource,
        DeploymentID,
        ReplicaID,
        RequestMetadata,
    )
    from ray.serve.request_router import PendingRequest

    from slidingserve.serve.messages import GenerateRequest
    from slidingserve.serve.router import SlackRouter
    from slidingserve.serve.slo_headers import RequestSLO
    from slidingserve.slo.tiers import load_tiers

    dep = DeploymentID(name="Engine", app_name="slidingserve")

    def replica(uid: str, waiting: dict[int, int]) -> Any:
        """What the router reads of a ``RunningReplica`` (the real one needs a live actor)."""
        stats = ReplicaLoad(ts=time.time(), replica=uid, queue_len=0, running=0,
                            waiting_tokens=waiting, s_per_prefill_token=1e-3,
                            step_s=0.02).to_stats()
        return SimpleNamespace(replica_id=ReplicaID(unique_id=uid, deployment_id=dep),
                               routing_stats=stats)

    idle, busy = replica("idle", {}), replica("busy", {0: 4000})
    slo = RequestSLO.of_tier(load_tiers()["interactive"])

    async def choose(avoid: tuple[str, ...], candidates: list[Any]) -> list[str]:
        router = SlackRouter(deployment_id=dep, handle_source=DeploymentHandleSource.UNKNOWN)
        router.initialize_state(stale_after_s=3.0, seed=0)
        req = GenerateRequest("r", [1] * 50, slo, {"max_tokens": 1}, time.time(), avoid)
        meta = RequestMetadata(request_id="x", internal_request_id="x")
        ranks = await router.choose_replicas(candidates, PendingRequest([req], {}, meta))
        return [r.replica_id.unique_id for rank in ranks for r in rank]

    assert asyncio.run(choose((), [idle, busy])) == ["idle", "busy"]
    assert asyncio.run(choose(("idle",), [idle, busy])) == ["busy"]
    assert asyncio.run(choose(("idle",), [idle])) == ["idle"]  # the only one left
