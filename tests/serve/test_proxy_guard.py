"""``IngressGuard`` in front of an ASGI app that behaves as Ray Serve's proxy does when the
ingress replica dies: it returns having sent nothing (no response yet) or stops mid-body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from slidingserve.serve.proxy_guard import IngressGuard, guarded_env
from slidingserve.serve.proxy_tier_gate import ProxyTierGate


class ScriptedProxy:
    """Each call plays the next script entry: "dies" (nothing sent), "cut" (SSE started, then
    nothing more) or "ok" (echoes the request body as JSON)."""

    def __init__(self, *script: str):
        self.script, self.bodies = list(script), []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        self.bodies.append(msg["body"])
        act = self.script.pop(0)
        if act == "ok":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(
                {"echo": msg["body"].decode()}).encode()})
        elif act == "cut":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b'data: {"x": 1}\n\n',
                        "more_body": True})


def post(app: Any, body: bytes = b'{"prompt": "hi"}') -> httpx.Response:
    return asyncio.run(_post(app, body))


async def _post(app: Any, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=IngressGuard(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/v1/completions", content=body)


def test_a_request_never_answered_is_sent_once_more_with_its_body():
    inner = ScriptedProxy("dies", "ok")
    r = post(inner)
    assert r.status_code == 200 and r.json() == {"echo": '{"prompt": "hi"}'}
    assert r.headers["x-ingress-retried"] == "1"
    assert inner.bodies == [b'{"prompt": "hi"}'] * 2


def test_a_first_answer_is_not_marked_retried():
    r = post(ScriptedProxy("ok"))
    assert r.status_code == 200 and "x-ingress-retried" not in r.headers


def test_two_failures_give_an_explicit_503():
    inner = ScriptedProxy("dies", "dies")
    r = post(inner)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "failed before answering" in r.json()["error"]["message"]
    assert len(inner.bodies) == 2


def test_a_cut_stream_ends_with_an_error_event_and_is_not_retried():
    inner = ScriptedProxy("cut", "ok")
    r = post(inner)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[0] == {"x": 1}
    assert "ingress replica failed" in events[-1]["error"]["message"]
    assert len(inner.bodies) == 1


def test_the_proxy_callback_is_importable_from_its_env_value():
    from ray.serve._private.http_util import (
        _apply_middlewares,
        validate_http_proxy_callback_return,
    )
    from ray.serve._private.utils import call_function_from_import_path

    path = guarded_env()["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    middlewares = validate_http_proxy_callback_return(call_function_from_import_path(path))
    assert [m.cls for m in middlewares] == [IngressGuard, ProxyTierGate]
    # Serve wraps them in order: the tier gate is outermost, before the guard reads a body
    app = _apply_middlewares(ScriptedProxy("ok"), middlewares)
    assert isinstance(app, ProxyTierGate) and isinstance(app.app, IngressGuard)
