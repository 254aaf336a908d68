"""``ProxyTierGate`` in front of a scripted ingress: a 429 that holds its tier makes the proxy
answer that tier's next requests itself, for the hold, only for clients the ingress has
authenticated for that tier; everything else reaches the ingress."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from slidingserve.serve.proxy_tier_gate import ProxyTierGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ingress:
    """Plays each status in turn; a 429 with ``hold`` carries the hold header."""

    def __init__(self, *script: tuple[int, float | None]):
        self.script, self.calls = list(script), 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        status, hold = self.script.pop(0)
        headers = [(b"content-type", b"application/json"), (b"x-ingress-replica", b"i1")]
        if hold is not None:
            headers += [(b"retry-after", b"2"), (b"x-slo-tier", b"batch"),
                        (b"x-slo-tier-hold-ms", str(hold * 1e3).encode())]
        body = json.dumps({"error": {"message": f"status {status}"}}).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def run(gate: ProxyTierGate, *requests: tuple[str, str, dict[str, str]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(method, path, headers=headers, content=b"{}")
                    for method, path, headers in requests]
    return asyncio.run(go())


BATCH = {"x-slo-tier": "batch", "authorization": "Bearer k1"}


def test_a_held_tier_is_answered_at_the_proxy_until_its_hold_ends():
    clock, refused = Clock(), []
    ingress = Ingress((429, 0.5), (200, None), (200, None))
    gate = ProxyTierGate(ingress, on_refuse=refused.append, clock=clock)
    first, second = run(gate, ("POST", "/v1/completions", BATCH),
                        ("POST", "/v1/completions", BATCH))
    assert first.status_code == 429 and "x-refused-at" not in first.headers
    assert second.status_code == 429 and second.headers["x-refused-at"] == "proxy"
    assert second.json() == first.json() and second.headers["retry-after"] == "2"
    assert "x-slo-tier-hold-ms" not in second.headers and "x-ingress-replica" not in second.headers
    assert ingress.calls == 1 and refused == ["batch"]
    other = run(gate, ("POST", "/v1/completions", {**BATCH, "x-slo-tier": "interactive"}))[0]
    assert other.status_code == 200 and ingress.calls == 2  # another tier is not held
    clock.now += 0.5
    assert run(gate, ("POST", "/v1/completions", BATCH))[0].status_code == 200  # hold over
    assert ingress.calls == 3


def test_only_clients_the_ingress_authenticated_for_the_tier_are_answered_at_the_proxy():
    ingress = Ingress((429, 0.5), (401, None), (403, None), (200, None), (200, None))
    gate = ProxyTierGate(ingress, clock=Clock())
    got = run(gate, ("POST", "/v1/completions", BATCH),
              ("POST", "/v1/completions", {**BATCH, "authorization": "Bearer wrong"}),
              ("POST", "/v1/completions", {"x-slo-tier": "batch"}),
              ("GET", "/v1/completions", BATCH),  # not a POST: never held
              ("POST", "/v1/chat/completions", BATCH))  # another path: not held
    assert [r.status_code for r in got] == [429, 401, 403, 200, 200]
    assert ingress.calls == 5


def test_a_429_without_a_hold_holds_nothing():
    ingress = Ingress((429, None), (200, None))
    gate = ProxyTierGate(ingress, clock=Clock())
    got = run(gate, ("POST", "/v1/completions", BATCH), ("POST", "/v1/completions", BATCH))
    assert [r.status_code for r in got] == [429, 200] and ingress.calls == 2
