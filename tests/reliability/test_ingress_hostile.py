"""Every hand-written hostile request, straight into the ingress's ASGI app (no Ray, no
engine: each must be refused before a request would reach one)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from slidingserve.faults.bad_input import hand_cases, run_hand_cases
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import resolve_model
from slidingserve.serve.ingress import IngressService, body_limit_bytes, build_api
from slidingserve.slo.tiers import load_tiers

KEY = "sk-test-hostile"


@pytest.fixture(scope="module")
def asgi():
    from transformers import AutoTokenizer

    cfg = load_serve_config({"auth": {"keys": {KEY: ["*"]}, "keys_env": None}})
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.engine))
    service = IngressService(cfg, load_tiers(cfg.tiers_path), None, tokenizer)
    return build_api(service), cfg


def test_every_hand_case_is_a_clear_4xx(asgi):
    app, cfg = asgi
    limit = body_limit_bytes(cfg.engine.max_model_len)
    cases = hand_cases(cfg.engine.max_model_len, limit + 1)
    results = asyncio.run(run_hand_cases("http://ingress", cases,
                                         {"authorization": f"Bearer {KEY}"}, 30.0,
                                         transport=httpx.ASGITransport(app=app)))
    wrong = [r for r in results if not r["ok"]]
    assert not wrong, wrong
    assert len(results) == len(cases) >= 45


def test_body_limit_counts_chunked_bodies_too(asgi):
    app, cfg = asgi
    limit = body_limit_bytes(cfg.engine.max_model_len)

    async def chunks():
        yield b'{"prompt": "'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://ingress") as client:
            return await client.post("/v1/completions", content=chunks(),
                                     headers={"authorization": f"Bearer {KEY}",
                                              "content-type": "application/json"})

    resp = asyncio.run(go())
    assert resp.status_code == 413
    assert "too large" in resp.json()["error"]["message"]


def test_invalid_json_names_the_position(asgi):
    app, _ = asgi
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://ingress") as c:
            return await c.post("/v1/completions", content=b'{"prompt": ',
                                headers={"authorization": f"Bearer {KEY}",
                                         "content-type": "application/json"})

    resp = asyncio.run(go())
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("body is not valid JSON")
