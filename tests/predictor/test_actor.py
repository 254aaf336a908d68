"""The predictor actor on a real local Ray cluster: polling, gate, samples, scheduled retrain."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from predictor_factories import (
    GPU,
    probe_features,
    profile_provenance,
    profile_trace,
    relabeled,
    trained_bundle,
)

from predictor.actor import ModelSubscriber, SampleSender, get_or_create_actor
from predictor.model import LightGBMLatencyModel
from predictor.service import ServiceConfig
from predictor.steptrace import StepTrace
from predictor.training import TrainConfig, fit_bundle, split_indices

pytestmark = pytest.mark.ray
NAMESPACE = "predictor-tests"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # address="local": always a fresh cluster of our own, never another process's running one
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def actor_factory(ray_cluster: Any) -> Iterator[Any]:
    made: list[Any] = []

    def make(config: ServiceConfig | None = None, **kw: Any) -> Any:
        name = f"predictor-{uuid.uuid4().hex[:8]}"
        actor = get_or_create_actor(config, name=name, namespace=NAMESPACE, **kw)
        made.append(actor)
        return actor, name

    yield make
    for actor in made:  # detached actors outlive their creator: kill them explicitly
        ray_cluster.kill(actor)


def test_subscriber_gets_each_published_version(ray_cluster: Any, actor_factory: Any) -> None:
    ray = ray_cluster
    actor, name = actor_factory(ServiceConfig())
    assert ray.get(get_or_create_actor(name=name, namespace=NAMESPACE).version.remote()) == 0
    sub = ModelSubscriber(actor, served=profile_provenance())
    assert not sub.poll() and sub.model is None

    assert ray.get(actor.submit.remote(trained_bundle().to_bytes(), True)).published
    assert sub.poll() and sub.version == 1 and sub.model is not None
    X = probe_features(20)
    local = LightGBMLatencyModel(trained_bundle())
    np.testing.assert_array_equal(sub.model.predict_features(X), local.predict_features(X))
    assert not sub.poll()  # nothing new: only the version was asked for

    # the gate, through the actor: a worse candidate is kept out, subscribers stay on v1
    tr, te = split_indices(len(profile_trace()), 0.2, 0)
    test = profile_trace().subset(te)
    train = profile_trace().subset(tr)
    worse = fit_bundle(
        StepTrace(train.X, train.latency_s * 1.6, train.provenance),
        TrainConfig(num_boost_round=100),
    )
    result = ray.get(actor.submit.remote(worse.to_bytes(), False, test))
    assert not result.published and result.version == 1
    assert not sub.poll() and sub.version == 1
    assert ray.get(actor.stats.remote())["holdout_samples"] == 0  # refused: steps not kept

    # a second subscriber of the same named actor (get_if_exists) sees the same model
    other = ModelSubscriber(get_or_create_actor(name=name, namespace=NAMESPACE), kind="p90")
    assert other.poll() and other.version == 1 and other.model is not None
    assert other.model.kind == "p90"


def test_samples_flow_and_scheduled_retrain_publishes(ray_cluster: Any, actor_factory: Any) -> None:
    ray = ray_cluster
    config = ServiceConfig(min_train_samples=50, train=TrainConfig(num_boost_round=60))
    actor, _ = actor_factory(config, retrain_every_s=0.5)
    sender = SampleSender(actor, profile_provenance(), batch=100)
    trace = profile_trace()
    for x, y in zip(trace.X, trace.latency_s, strict=True):
        sender.record(x, y)
    sender.flush()
    deadline = time.monotonic() + 60  # batches are applied concurrently (threaded actor)
    while ray.get(actor.stats.remote())["seen"] < len(trace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.get(actor.stats.remote())["seen"] == len(trace)
    sub = ModelSubscriber(actor, served=profile_provenance())
    deadline = time.monotonic() + 120
    while not sub.poll() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sub.version >= 1, ray.get(actor.stats.remote())["history"]
    history = ray.get(actor.stats.remote())["history"]
    assert any(h["published"] for h in history)


def test_retrain_job_publishes_through_the_gate(
    ray_cluster: Any, actor_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from predictor_factories import PROFILE

    from predictor.retrain import main as retrain_main

    actor, name = actor_factory(ServiceConfig())
    args = ["--steps", str(PROFILE), "--publish", "--actor-name", name, "--namespace", NAMESPACE]
    assert retrain_main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["gate"]["published"] and first["gate"]["version"] == 1
    # the same model again does not beat itself: the gate keeps v1
    assert retrain_main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not second["gate"]["published"] and second["gate"]["version"] == 1
    assert ray_cluster.get(actor.version.remote()) == 1


def test_replicas_refuse_a_model_of_other_hardware(ray_cluster: Any, actor_factory: Any) -> None:
    """A GPU replica subscribed to an actor that published a CPU model keeps its own model."""
    actor, _ = actor_factory(ServiceConfig())
    assert ray_cluster.get(actor.submit.remote(trained_bundle().to_bytes(), True)).published
    gpu_replica = ModelSubscriber(actor, served=GPU)
    assert not gpu_replica.poll() and gpu_replica.model is None and gpu_replica.refused == 1
    assert not gpu_replica.poll() and gpu_replica.refused == 1  # v1 is not fetched again
    cpu_replica = ModelSubscriber(actor, served=profile_provenance())
    assert cpu_replica.poll() and cpu_replica.version == 1
    # and the actor, bound to the CPU steps, refuses the GPU replica's samples
    sender = SampleSender(actor, GPU, batch=100)
    trace = profile_trace()
    for x, y in zip(trace.X[:10], trace.latency_s[:10], strict=True):
        sender.record(x, y)
    from predictor.provenance import ProvenanceMismatchError

    with pytest.raises(ProvenanceMismatchError, match="this predictor serves"):
        ray_cluster.get(sender.flush())
    assert ray_cluster.get(actor.stats.remote())["seen"] == 0


def test_retrain_job_cannot_publish_cpu_steps_to_a_gpu_deployment(
    ray_cluster: Any, actor_factory: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented retrain example, pointed at a GPU deployment's actor: refused."""
    import json

    from predictor.retrain import main as retrain_main
    from predictor.steptrace import write_steptrace

    actor, name = actor_factory(ServiceConfig(), served=GPU)  # as the GPU replicas create it
    gpu_steps = tmp_path / "gpu_steps.csv"
    write_steptrace(relabeled(profile_trace(), GPU), gpu_steps)
    assert retrain_main(["--steps", str(gpu_steps), "--publish", "--actor-name", name,
                         "--namespace", NAMESPACE]) == 0
    gate = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["gate"]
    assert gate["published"] and gate["version"] == 1  # steps of its own hardware: fine
    held_out = ray_cluster.get(actor.stats.remote())["holdout_samples"]

    from predictor_factories import PROFILE

    for force in ([], ["--force"]):  # not even --force (which skips the comparison) gets through
        args = ["--steps", str(PROFILE), "--publish", "--actor-name", name,
                "--namespace", NAMESPACE, *force]
        assert retrain_main(args) == 1
        out = capsys.readouterr()
        assert "hardware 'x86_64-2cpu-omp1'" in out.err and "NVIDIA H100" in out.err
        assert "error" in json.loads(out.out.strip().splitlines()[-1])
    stats = ray_cluster.get(actor.stats.remote())
    assert stats["version"] == 1 and stats["holdout_samples"] == held_out


def test_retrain_job_before_the_deployment_binds_no_actor(
    ray_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no predictor actor on the cluster, ``--publish`` exits 2 naming what to do and
    creates none (a CPU job run first would otherwise bind the actor to CPU hardware and lock
    a GPU deployment's samples out); ``--create-actor`` creates it, bound to the steps'."""
    import json

    from predictor_factories import PROFILE

    from predictor.retrain import main as retrain_main

    name = f"predictor-{uuid.uuid4().hex[:8]}"
    args = ["--steps", str(PROFILE), "--publish", "--actor-name", name, "--namespace", NAMESPACE]
    assert retrain_main(args) == 2
    err = capsys.readouterr().err
    assert f"no predictor actor {name!r}" in err and "--create-actor" in err
    with pytest.raises(ValueError):
        ray_cluster.get_actor(name, namespace=NAMESPACE)
    assert retrain_main([*args, "--create-actor"]) == 0
    gate = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["gate"]
    actor = ray_cluster.get_actor(name, namespace=NAMESPACE)
    try:
        assert gate["published"] and gate["version"] == 1
        assert ray_cluster.get(actor.version.remote()) == 1
    finally:
        ray_cluster.kill(actor)
