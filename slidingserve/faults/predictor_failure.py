"""Predictor failure: kill the central predictor actor, bring it back, publish bad models.

1. Traffic makes the replicas stream step samples; the actor retrains and publishes a model;
   every replica applies it (read from the replica's latency-model directory).
2. The actor's process is SIGKILLed. Traffic continues: every request must still be served and
   every replica keep the model it had.
3. The actor returns (re-created under its name, as an operator or a replica would) and
   publishes again: "publishing resumes" when every replica applies the new model in time.
4. A corrupt model (garbage, one flipped byte) and a model with another feature schema are
   submitted: each must be refused, the published version must not move, and the replicas
   must keep their model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import httpx

from slidingserve.faults.client import Result, send, tally
from slidingserve.faults.harness import AppUnderTest, alive_actors, kill_process

BODY = {"prompt": list(range(30, 94)), "max_tokens": 12, "ignore_eos": True, "temperature": 0.0}
# one long prompt per burst: the gate publishes only models fitted on long prefills too
LONG_BODY = {"prompt": [30 + i % 500 for i in range(400)], "max_tokens": 4, "ignore_eos": True,
             "temperature": 0.0}


@dataclass(frozen=True)
class PredictorFailureConfig:
    min_samples: int = 40
    apply_timeout_s: float = 90.0
    outage_s: float = 10.0
    traffic_timeout_s: float = 120.0


def small_service_config() -> Any:
    """Sample gates small enough for a short scenario (the defaults want hundreds of steps)."""
    from predictor.service import ServiceConfig

    return ServiceConfig(min_train_samples=20, min_holdout_samples=5, min_prefill_tokens=128)


def create_predictor() -> Any:
    from predictor.actor import get_or_create_actor

    return get_or_create_actor(small_service_config())


def predictor_pid() -> int | None:
    from predictor.actor import ACTOR_NAME

    return alive_actors().get(ACTOR_NAME)


def label(bundle: Any) -> str:
    """A model bundle's ``v<version>:<hash>`` label (the hash's first 12 digits)."""
    return f"v{bundle.version}:{bundle.data_hash[:12]}"


def bundle_label(blob: bytes) -> str:
    """The label of a published model's bytes."""
    from predictor.bundle import ModelBundle

    return label(ModelBundle.from_bytes(blob))


def replica_model_hashes(app: AppUnderTest) -> dict[str, str | None]:
    """Replica -> data hash of the predictor model in its latency-model dir (None: none yet)."""
    from predictor.bundle import ModelFormatError, load_bundle
    from slidingserve.serve.config import load_serve_config
    from slidingserve.serve.engine_host import ReplicaFiles

    engine = load_serve_config(app.args).engine
    out: dict[str, str | None] = {}
    for replica in app.engine_replicas():
        path = ReplicaFiles.for_replica(engine, replica).latency_model
        try:
            out[replica] = label(load_bundle(path))
        except (ModelFormatError, OSError):
            out[replica] = None
    return out


async def traffic(url: str, auth: dict[str, str], n: int, timeout_s: float) -> list[Result]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        bodies = [LONG_BODY] + [BODY] * (n - 1)
        return list(await asyncio.gather(*(send(client, "/v1/completions", body, auth, timeout_s)
                                           for body in bodies)))


def wait_for(pred: Any, timeout_s: float, period_s: float = 1.0) -> float | None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if pred():
            return time.time() - t0
        time.sleep(period_s)
    return None


def corrupt_models(good: bytes) -> dict[str, bytes]:
    """Garbage, a valid bundle with one byte flipped, and one with another feature schema."""
    from predictor.bundle import ModelBundle

    files = json.loads(good)["files"]
    booster = next(k for k in files if k != "model.json" and k.endswith(".txt"))
    raw = bytearray(base64.b64decode(files[booster]))
    raw[len(raw) // 2] ^= 0x01
    flipped = json.dumps({**json.loads(good),
                          "files": {**files, booster: base64.b64encode(bytes(raw)).decode()}})
    bundle = ModelBundle.from_bytes(good)
    other_schema = replace(bundle, feature_names=tuple(reversed(bundle.feature_names)),
                           feature_schema_version=bundle.feature_schema_version + 1)
    return {"garbage": b"\x00not a model\xff" * 10, "flipped_byte": flipped.encode(),
            "wrong_feature_schema": other_schema.to_bytes()}


def run_predictor_failure(app: AppUnderTest, auth: dict[str, str],
                          cfg: PredictorFailureConfig) -> dict[str, Any]:
    import ray

    from predictor.actor import ACTOR_NAME, NAMESPACE

    sent: list[Result] = []
    out: dict[str, Any] = {}
    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)

    def seen() -> int:
        stats: Any = ray.get(actor.stats.remote(), timeout=30)
        return int(stats["seen"])

    gate: Any = None
    for _ in range(10):  # bounded: traffic until the actor holds samples enough to publish
        sent += asyncio.run(traffic(app.url, auth, 6, cfg.traffic_timeout_s))
        if seen() >= cfg.min_samples:
            gate = ray.get(actor.retrain.remote(), timeout=120)
            if gate.published:
                break
        time.sleep(1.0)
    out["samples_before_kill"] = seen()
    if gate is None:
        gate = ray.get(actor.retrain.remote(), timeout=120)
    out["first_publish"] = {"published": gate.published, "version": gate.version,
                            "reason": gate.reason}
    first = replica_model_hashes(app)
    good: Any = ray.get(actor.model_bytes.remote(), timeout=30)
    # replicas start with the shipped cold-start model (or an earlier actor's): wait for this one's
    published = None if good is None else bundle_label(good[1])

    def all_have_model() -> bool:
        hashes = replica_model_hashes(app)
        return bool(hashes) and all(h is not None and (published is None or h == published)
                                    for h in hashes.values())

    out["applied_before_kill_s"] = wait_for(all_have_model, cfg.apply_timeout_s)
    before = replica_model_hashes(app)

    pid = predictor_pid()
    if pid is None:
        raise RuntimeError(f"predictor actor {ACTOR_NAME!r} not found alive")
    kill_process(pid)
    t_kill = time.time()
    outage: list[Result] = []
    while time.time() - t_kill < cfg.outage_s:
        outage += asyncio.run(traffic(app.url, auth, 4, cfg.traffic_timeout_s))
    during = replica_model_hashes(app)
    out["during_outage"] = {**tally(outage), "replicas_kept_model": during == before,
                            "models": during}
    sent += outage

    actor = create_predictor()  # it returns
    ray.get(actor.version.remote(), timeout=60)
    republish: dict[str, Any] = {}
    if good is not None:
        for force in (True, True):  # v1 on the new actor, then v2: a model the replicas lack
            gate = ray.get(actor.submit.remote(good[1], force), timeout=60)
            republish = {"published": gate.published, "version": gate.version}

    def resumed() -> bool:
        now = replica_model_hashes(app)
        return bool(now) and all(h is not None and h != before.get(r) for r, h in now.items())

    waited = wait_for(resumed, cfg.apply_timeout_s)
    out["after_return"] = {"republished": republish, "publishing_resumed": waited is not None,
                           "applied_s": None if waited is None else round(waited, 1),
                           "models": replica_model_hashes(app)}
    sent += asyncio.run(traffic(app.url, auth, 4, cfg.traffic_timeout_s))

    steady = replica_model_hashes(app)
    version = int(ray.get(actor.version.remote(), timeout=30))
    refusals: dict[str, Any] = {}
    if good is not None:
        for name, blob in corrupt_models(good[1]).items():
            gate = ray.get(actor.submit.remote(blob, True), timeout=60)
            refusals[name] = {"refused": not gate.published, "reason": gate.reason[:160]}
    time.sleep(3.0)
    out["bad_models"] = {**refusals,
                         "version_unchanged": int(ray.get(actor.version.remote())) == version,
                         "replicas_kept_model": replica_model_hashes(app) == steady}
    t = tally(sent)
    out["first_models"] = first
    return {**t, **out}


