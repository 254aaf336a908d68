"""The application on a multi-node Ray cluster: several raylets on this one machine
(``ray.cluster_utils.Cluster``), as ``ray start --head`` / ``ray start --address`` make them.

The head node holds the Serve controller, the HTTP proxy and the ingress (custom resource
``head``); each worker node offers one ``engine`` resource, so the two engine replicas
(``placement.engine_resources``) run on different nodes; the predictor actor runs wherever Ray
places it. One cluster for the module;
the test that removes a node runs last (test names are numbered).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import free_port

from slidingserve.faults.harness import APP_NAME, AppUnderTest, alive_actor_nodes, kill_process_tree
from slidingserve.faults.predictor_failure import (
    LONG_BODY,
    create_predictor,
    replica_model_hashes,
    wait_for,
)
from slidingserve.faults.replica_failure import ReplicaFailureConfig, run_replica_failure

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

WORKER = {"num_cpus": 1, "resources": {"engine": 1}}
ARGS = {
    "num_replicas": 2,
    "engine_num_cpus": 1,
    "auth": {"keys_env": None},
    "router": {"stats_period_s": 0.5, "stale_after_s": 5.0},
    "engine": {"step_trace_flush_every": 4},
    "predictor": {"enabled": True, "poll_period_s": 0.5, "sample_batch": 8,
                  "retrain_every_s": None},
    "placement": {"engine_resources": {"engine": 1}, "ingress_resources": {"head": 0.01}},
}
BODY = {"prompt": list(range(30, 94)), "max_tokens": 8, "ignore_eos": True, "temperature": 0.0}


@dataclass
class Fleet:
    cluster: Any
    app: AppUnderTest
    head: str  # node id

    def worker(self, node_id: str) -> Any:
        return next(n for n in self.cluster.worker_nodes if n.node_id == node_id)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from slidingserve.serve.app import build

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"head": 1}, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**WORKER)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="slidingserve-multinode")
        create_predictor()  # before the replicas, so that they find it
        port = free_port()
        # one proxy: every raylet shares this machine's ports
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        t0 = time.time()
        serve.run(build(ARGS), name=APP_NAME, route_prefix="/")
        print(f"app up on {len(cluster.worker_nodes) + 1} nodes in {time.time() - t0:.1f}s")
        logs = Path(cluster.head_node.get_logs_dir_path())
        yield Fleet(cluster, AppUnderTest(f"http://127.0.0.1:{port}", ARGS, logs),
                    cluster.head_node.node_id)
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.shutdown()


def test_1_engine_replicas_run_on_different_worker_nodes(fleet):
    from predictor.actor import ACTOR_NAME

    nodes = fleet.app.engine_nodes()
    workers = {n.node_id for n in fleet.cluster.worker_nodes}
    assert len(nodes) == 2 and len(set(nodes.values())) == 2, nodes
    assert set(nodes.values()) <= workers
    others = alive_actor_nodes()
    ingress = [node for name, node in others.items() if "#Ingress#" in name]
    assert ingress and set(ingress) == {fleet.head}, others
    # the predictor actor runs where Ray placed it (the replica that created it asked for no
    # node): the replicas are on two nodes, so it publishes across the network to one at least
    assert others[ACTOR_NAME] in {fleet.head, *workers}
    assert any(node != others[ACTOR_NAME] for node in nodes.values())


def test_2_router_sends_to_replicas_on_both_nodes(fleet):
    time.sleep(1.0)  # both replicas report routing stats

    def one(_: int) -> str:
        r = httpx.post(f"{fleet.app.url}/v1/completions", json=BODY, timeout=120,
                       headers={"x-slo-tier": "interactive"})
        assert r.status_code == 200, r.text
        return r.headers["x-served-by"]

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(one, range(8)))
    nodes = fleet.app.engine_nodes()
    assert {nodes[r] for r in served} == set(nodes.values()), (served, nodes)


def test_3_predictor_publishes_to_replicas_on_both_nodes(fleet):
    import ray

    from predictor.actor import ACTOR_NAME, NAMESPACE

    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)

    gates: list[Any] = []

    def traffic_and_publish() -> bool:
        bodies = [LONG_BODY, LONG_BODY] + [BODY] * 6  # the gate wants long prefills too
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda body: httpx.post(f"{fleet.app.url}/v1/completions", json=body,
                                                  timeout=120), bodies))
        stats: Any = ray.get(actor.stats.remote(), timeout=30)
        if stats["train_samples"] < 20 or stats["holdout_samples"] < 5:
            return False
        gates.append(ray.get(actor.retrain.remote(), timeout=120))
        return bool(gates[-1].published)

    assert wait_for(traffic_and_publish, 180, 0.0) is not None, gates[-3:]
    gate = gates[-1]
    want = f"v{gate.version}:"

    def applied() -> bool:
        hashes = replica_model_hashes(fleet.app)
        return len(hashes) == 2 and all((h or "").startswith(want) for h in hashes.values())

    assert wait_for(applied, 90) is not None, replica_model_hashes(fleet.app)


def test_4_losing_a_worker_node_loses_nothing(fleet):
    """A worker node dies (its raylet and every process on it, no graceful shutdown) while
    both replicas stream. No other node offers ``engine``, so the app goes on with one replica
    (the replacement waits for a node)."""
    nodes = fleet.app.engine_nodes()
    lost: list[str] = []

    def lose_node(replica: str, pid: int) -> None:
        # A lost node takes every process on it at once. ``remove_node`` kills the node's
        # raylet, and its worker processes only exit once they notice: meanwhile the replica
        # would go on streaming, so it and its engine are killed first, as the loss would.
        lost.append(nodes[replica])
        kill_process_tree(pid)
        fleet.cluster.remove_node(fleet.worker(nodes[replica]), allow_graceful=False)

    cfg = ReplicaFailureConfig(streams=4, whole=2, queued=6, probe_s=8.0, recover_timeout_s=0)
    r = asyncio.run(run_replica_failure(fleet.app, {}, cfg, kill=lose_node))
    print({k: v for k, v in r.items() if k != "lost_examples"})
    assert r["lost"] == 0, r["lost_examples"]
    killed = r["streams"]["on_killed"]  # streams that had sent tokens: an explicit error each
    assert killed["sent"] > 0 and killed["error"] == killed["sent"], killed
    not_started = r["not_started"]  # no token when the node died: served once, elsewhere
    assert not_started["sent"] > 0 and not_started["error"] == 0, json.dumps(not_started)
    assert not_started["served"] == not_started["sent"]
    # something the lost node held went elsewhere: a queued stream, or a whole answer resent
    # (where the queued ones were routed at the kill is up to the router's timing)
    assert not_started["on_killed"] > 0 or r["retried_total"] > 0, r
    assert r["probes"]["served"] == r["probes"]["sent"] > 0, r["probes"]
    assert r["after_recovery"]["served"] == r["after_recovery"]["sent"]  # on the survivor
    # the GCS marks the lost node's actors dead once the node misses its health checks
    survivors = [n for n in nodes.values() if n != lost[0]]
    deadline = time.time() + 60.0
    while list((after := fleet.app.engine_nodes()).values()) != survivors \
            and time.time() < deadline:
        time.sleep(1.0)
    assert list(after.values()) == survivors, (lost, after)
    assert r["orphan_engine_processes"] == []
