"""A tier-wide refusal closes that tier at the ingress for a moment: its next requests get
429 without a call to a replica; other tiers, and refusals of one prompt, do not close it.

A fake engine handle stands in for Ray Serve (no cluster): ``fake_engine``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fake_engine import Engine, Tokenizer
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

from slidingserve.serve.config import load_serve_config
from slidingserve.serve.ingress import IngressService, build_api
from slidingserve.serve.messages import Admitted, Rejected, TokenDelta
from slidingserve.serve.proxy_tier_gate import ProxyTierGate
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.serve.tier_gate import TierGate
from slidingserve.slo.tiers import load_tiers

TIERS = load_tiers()


def served(tier: str) -> list[Any]:
    return [Admitted("a", RequestSLO.of_tier(TIERS[tier]), None, 0.1),
            TokenDelta("<x>", [11], "length", 2, 1)]


BEHIND = Rejected("a", 9.0, 1800.0, 2, "replica is behind on tier 'interactive'", tier_wide=True)
SLOW = Rejected("a", 9.0, 6.0, 3)  # this prompt's predicted TTFT misses: not tier-wide


def service(engine: Engine, hold_s: float | None) -> IngressService:
    cfg = load_serve_config({"auth": {"keys_env": None}, "admission": {"ingress_hold_s": hold_s}})
    return IngressService(cfg, TIERS, engine, Tokenizer())


def send(svc: IngressService, tier: str) -> tuple[int, dict[str, str], str]:
    async def go() -> tuple[int, dict[str, str], str]:
        body = CompletionRequest(prompt="ka ko", max_tokens=1)
        resp = await svc.complete(body, {"x-slo-tier": tier})
        return resp.status_code, dict(resp.headers), resp.body.decode()

    return asyncio.run(go())


def test_gate_holds_a_closed_tier_for_its_hold_time_only():
    gate = TierGate(0.5)
    gate.close(2, "full", 3, now=100.0)
    closed = gate.refusal(2, 100.4)
    assert closed is not None and closed.reason == "full" and closed.retry_after_s == 3
    assert gate.refusal(1, 100.4) is None and gate.refusal(0, 100.4) is None
    assert gate.refusal(2, 100.5) is None and gate.refusal(2, 100.1) is None  # reopened
    off = TierGate(None)
    off.close(2, "full", 3, now=100.0)
    assert off.refusal(2, 100.0) is None


def test_a_tier_wide_refusal_answers_that_tiers_next_requests_at_the_ingress():
    engine = Engine([BEHIND], served("interactive"), served("standard"), served("batch"))
    svc = service(engine, hold_s=30.0)
    status, headers, text = send(svc, "batch")  # the replica refuses batch as a whole
    assert status == 429 and "behind on tier 'interactive'" in text
    status, headers, text = send(svc, "batch")  # answered here: no call to a replica
    assert status == 429 and headers["retry-after"] == "2" and "behind on tier" in text
    assert len(engine.requests) == 1
    assert send(svc, "interactive")[0] == 200  # other tiers still go to the replicas
    assert send(svc, "standard")[0] == 200
    assert len(engine.requests) == 3
    svc.gate.close(2, "expired", 1, now=time.time() - 60.0)  # past its hold: sent again
    assert send(svc, "batch")[0] == 200 and len(engine.requests) == 4


def test_a_refusal_of_one_prompt_or_a_gate_turned_off_closes_nothing():
    engine = Engine([SLOW], served("interactive"))
    svc = service(engine, hold_s=30.0)
    assert send(svc, "interactive")[0] == 429
    assert send(svc, "interactive")[0] == 200 and len(engine.requests) == 2
    engine = Engine([BEHIND], served("batch"))
    svc = service(engine, hold_s=None)
    assert send(svc, "batch")[0] == 429
    assert send(svc, "batch")[0] == 200 and len(engine.requests) == 2


def post_all(app: Any, *tiers: str, auth: str | None = None) -> list[Any]:
    async def go() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {auth}"} if auth else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.post("/v1/completions", json={"prompt": "ka ko", "max_tokens": 1},
                                      headers={**headers, "x-slo-tier": t}) for t in tiers]
    return asyncio.run(go())


def test_the_proxy_answers_a_tier_the_ingress_holds_and_leaves_auth_to_the_ingress():
    engine = Engine([BEHIND], served("batch"))
    cfg = load_serve_config({"auth": {"keys_env": None, "keys": {"k1": ["*"]}},
                             "admission": {"ingress_hold_s": 30.0, "hold_at_proxy": True}})
    svc = IngressService(cfg, TIERS, engine, Tokenizer())
    proxy = ProxyTierGate(build_api(svc))
    first, second = post_all(proxy, "batch", "batch", auth="k1")
    assert first.status_code == 429 and float(first.headers["x-slo-tier-hold-ms"]) == 30_000
    assert second.status_code == 429 and second.headers["x-refused-at"] == "proxy"
    assert second.json() == first.json() and len(engine.requests) == 1
    # a client the ingress never authenticated is not answered by the proxy: 401 as always
    assert post_all(proxy, "batch", auth="wrong")[0].status_code == 401


def test_the_ingress_does_not_ask_the_proxy_to_hold_unless_told_to():
    engine = Engine([BEHIND], served("batch"))
    cfg = load_serve_config({"auth": {"keys_env": None}, "admission": {"ingress_hold_s": 30.0}})
    proxy = ProxyTierGate(build_api(IngressService(cfg, TIERS, engine, Tokenizer())))
    first, second = post_all(proxy, "batch", "batch")
    assert first.status_code == 429 and "x-slo-tier-hold-ms" not in first.headers
    assert second.status_code == 429 and "x-refused-at" not in second.headers  # the ingress's
    assert len(engine.requests) == 1
