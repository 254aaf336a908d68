"""The HTTP proxy's side of an ingress replica that dies under a request.

Ray Serve's HTTP proxy hands each request to one ingress replica. When that replica's process
dies, the proxy on its own answers a request that had no response yet with a bare
``500 Internal Server Error`` in plain text, and cuts a stream that had started without
ending it (no last chunk): either way the client cannot tell what happened. ``IngressGuard``,
an ASGI middleware Ray Serve loads into every proxy, makes both explicit:

* nothing sent yet: the request goes once more, with its body replayed, to an ingress
  replica (Serve has dropped the dead one from the proxy's routing by then; with a single
  ingress replica it waits for the new one); the response carries ``x-ingress-retried: 1``.
  If that fails too, the client gets a JSON 503 with an OpenAI-shaped ``error``;
* a response already started: a server-sent-event stream ends with an SSE ``error`` event
  and a proper end of body; any other body is ended, shorter than announced;
* the client left: nothing is retried and nothing is written.

Ray Serve reads the import path of ``proxy_middlewares`` from the environment of the proxy's
process (``PROXY_CALLBACK_ENV``), so it must be set where Ray starts: ``guarded_env()`` gives
the variable for ``ray start``; ``guarded_ray_start()`` wraps a local ``ray.init``. This module
imports nothing heavy: the proxy imports it at start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("ray.serve")

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "slidingserve.serve.proxy_guard:proxy_middlewares"
RETRIED_HEADER = b"x-ingress-retried"
REPLAY_LIMIT_BYTES = 64 * 2**20  # larger bodies stream through; they are not retried
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def guarded_env() -> dict[str, str]:
    """The environment a Ray node needs for its proxy to load ``IngressGuard``."""
    return {PROXY_CALLBACK_ENV: PROXY_CALLBACK}


@contextmanager
def guarded_ray_start() -> Iterator[None]:
    """Wrap a local ``ray.init`` in it: the raylet started there, and so the proxy, inherit
    ``guarded_env()`` from this process's environment, which is restored afterwards."""
    env = guarded_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def proxy_middlewares() -> list[Any]:
    """Ray Serve's HTTP proxy callback: the middlewares to wrap the proxy's ASGI app in. Serve
    applies them in order, so the last is outermost: ``ProxyTierGate`` answers a held tier
    before ``IngressGuard`` reads the body (``slidingserve.serve.proxy_tier_gate``)."""
    from starlette.middleware import Middleware

    from slidingserve.serve.proxy_tier_gate import ProxyTierGate, refusal_counter

    return [Middleware(IngressGuard), Middleware(ProxyTierGate, on_refuse=refusal_counter())]


def error_json(message: str, status: int) -> bytes:
    kind = "ServiceUnavailableError" if status == 503 else "InternalServerError"
    return json.dumps({"error": {"message": message, "type": kind, "param": None,
                                 "code": status}}).encode()


class _Attempt:
    """What one pass through the proxy sent to the client, forwarded as it goes."""

    def __init__(self, send: Send, retried: bool):
        self.send, self.retried = send, retried
        self.started = self.finished = False
        self.event_stream = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers") or [])
            self.event_stream = any(k.lower() == b"content-type" and
                                    v.startswith(b"text/event-stream") for k, v in headers)
            if self.retried:
                message = {**message, "headers": [*headers, (RETRIED_HEADER, b"1")]}
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.finished = True
        await self.send(message)


class IngressGuard:
    """ASGI middleware for the proxy: retry a request its ingress never answered, once;
    end a cut response explicitly."""

    def __init__(self, app: Any, replay_limit: int = REPLAY_LIMIT_BYTES):
        self.app, self.replay_limit = app, replay_limit

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size, more, disconnected = [], 0, True, False
        while more and size <= self.replay_limit:
            message = await receive()
            if message["type"] != "http.request":
                disconnected = message["type"] == "http.disconnect"
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
        if disconnected:
            return
        body, replayable = b"".join(chunks), not more
        left = False

        def replay() -> Receive:
            sent_body = False

            async def next_message() -> Message:
                nonlocal sent_body, left
                if not sent_body:
                    sent_body = True
                    return {"type": "http.request", "body": body, "more_body": more}
                message = await receive()
                left = left or message["type"] == "http.disconnect"
                return message
            return next_message

        for attempt in (1, 2):
            out = _Attempt(send, retried=attempt > 1)
            await self.app(scope, replay(), out)
            if out.finished or left:
                return
            if out.started:
                await self._end_cut(out, scope)
                return
            if attempt == 1 and replayable:
                log.warning("ingress guard: %s %s got no response (its ingress replica "
                            "failed); sending it once more", scope.get("method"),
                            scope.get("path"))
                continue
            break
        await self._unavailable(send, retried=replayable)

    async def _end_cut(self, out: _Attempt, scope: Message) -> None:
        log.warning("ingress guard: the response to %s %s was cut (its ingress replica "
                    "failed); ending it with an error", scope.get("method"), scope.get("path"))
        tail = b""
        if out.event_stream:
            msg = "ingress replica failed during the stream; the response is incomplete"
            tail = b"\n\ndata: " + error_json(msg, 500) + b"\n\n"  # after any partial line
        await out.send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _unavailable(self, send: Send, retried: bool) -> None:
        why = ("its ingress replica failed before answering" +
               (", and so did the retry" if retried else " (the body was too large to retry)"))
        body = error_json(f"request not served: {why}; retry later", 503)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
