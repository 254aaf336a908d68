"""The predictor actor on a real local Ray cluster: polling, gate, samples, scheduled retrain."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from predictor_factories import probe_features, profile_trace, trained_bundle

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
    sub = ModelSubscriber(actor)
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
    ray.get(actor.add_holdout.remote(test.X, test.latency_s))
    train = profile_trace().subset(tr)
    worse = fit_bundle(
        StepTrace(train.X, train.latency_s * 1.6, train.provenance),
        TrainConfig(num_boost_round=100),
    )
    result = ray.get(actor.submit.remote(worse.to_bytes(), False))
    assert not result.published and result.version == 1
    assert not sub.poll() and sub.version == 1

    # a second subscriber of the same named actor (get_if_exists) sees the same model
    other = ModelSubscriber(get_or_create_actor(name=name, namespace=NAMESPACE), kind="p90")
    assert other.poll() and other.version == 1 and other.model is not None
    assert other.model.kind == "p90"


def test_samples_flow_and_scheduled_retrain_publishes(ray_cluster: Any, actor_factory: Any) -> None:
    ray = ray_cluster
    config = ServiceConfig(min_train_samples=50, train=TrainConfig(num_boost_round=60))
    actor, _ = actor_factory(config, retrain_every_s=0.5)
    sender = SampleSender(actor, batch=100)
    trace = profile_trace()
    for x, y in zip(trace.X, trace.latency_s, strict=True):
        sender.record(x, y)
    sender.flush()
    deadline = time.monotonic() + 60  # batches are applied concurrently (threaded actor)
    while ray.get(actor.stats.remote())["seen"] < len(trace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.get(actor.stats.remote())["seen"] == len(trace)
    sub = ModelSubscriber(actor)
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
