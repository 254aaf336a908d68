"""Readiness without Ray: /health follows the engine probe, start-up time does not count
against admission, and the start-up progress line reads Serve's status."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import pytest

from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import EngineHost, resolve_model
from slidingserve.serve.health import EngineReadiness, progress_line, replica_states
from slidingserve.serve.ingress import IngressService, build_api
from slidingserve.serve.messages import Admitted, GenerateRequest
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(load_serve_config({}).engine))


def health(tokenizer, ready) -> httpx.Response:
    cfg = load_serve_config({"auth": {"keys_env": None}})
    api = build_api(IngressService(cfg, load_tiers(cfg.tiers_path), None, tokenizer, ready))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/health")

    return asyncio.run(get())


def test_health_is_503_until_an_engine_replica_is_ready(tokenizer):
    ready = {"n": 0}
    probe = EngineReadiness("app", count=lambda: ready["n"], ttl_s=0.0)
    starting = health(tokenizer, probe)
    assert starting.status_code == 503 and starting.headers["retry-after"] == "5"
    assert starting.json()["status"] == "starting"
    assert "no engine replica is ready" in starting.json()["error"]["message"]
    ready["n"] = 1
    up = health(tokenizer, probe)
    assert up.status_code == 200 and up.json()["status"] == "ok"


def test_readiness_probe_caches_and_fails_closed():
    calls = []

    def count() -> int:
        calls.append(1)
        return 2

    probe = EngineReadiness("app", count=count, ttl_s=60.0)
    assert asyncio.run(probe()) and asyncio.run(probe()) and len(calls) == 1

    def broken() -> int:
        raise ConnectionError("controller gone")

    assert not asyncio.run(EngineReadiness("app", count=broken)())


def test_waiting_for_the_engine_to_start_does_not_count_against_admission():
    """A request that arrived 36 s before the engine came up is judged from the moment it did
    (an interactive TTFT target is 6 s); one that waited 7 s on a running engine is not."""
    tiers = load_tiers()
    host = EngineHost(load_serve_config({}), tiers, "r-test")
    slo = RequestSLO.of_tier(tiers["interactive"])
    host.ready_s = time.time()  # what start() records
    early = GenerateRequest("r", [1] * 10, slo, {"max_tokens": 4}, time.time() - 36.0)
    decision = host.admit(early)
    assert isinstance(decision, Admitted) and decision.predicted_ttft_s < 1.0
    host.ready_s = time.time() - 2.0  # Serve routes it a moment after the engine is up
    assert host.admit(early).predicted_ttft_s < 1.0  # that moment is start-up too
    host.ready_s = time.time() - 60.0
    late = GenerateRequest("r", [1] * 10, slo, {"max_tokens": 4}, time.time() - 7.0)
    assert not isinstance(host.admit(late), Admitted)


def _status(app_state: str, engine: dict[str, int]) -> SimpleNamespace:
    deps = {"Engine": SimpleNamespace(replica_states=engine),
            "Ingress": SimpleNamespace(replica_states={"RUNNING": 1})}
    return SimpleNamespace(applications={"slidingserve": SimpleNamespace(
        status=app_state, message="", deployments=deps)})


def test_progress_line_names_each_deployment_and_the_model_load():
    status = _status("DEPLOYING", {"STARTING": 1, "RUNNING": 0})
    assert replica_states(status, "slidingserve") == {"STARTING": 1}
    line = progress_line(status, "slidingserve", 12.0)
    assert line == ("[  12s] slidingserve deploying; Engine: 1 starting (loading the model and "
                    "starting vLLM); Ingress: 1 running")
    running = progress_line(_status("RUNNING", {"RUNNING": 1}), "slidingserve", 40.0)
    assert "loading" not in running and "Engine: 1 running" in running
    assert "waiting for Serve" in progress_line(SimpleNamespace(applications={}), "x", 1.0)
