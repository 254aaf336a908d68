"""Refusing a closed tier in the HTTP proxy, before the request reaches an ingress replica.

Under overload most arrivals of the lower tiers are refused, and each refusal the ingress
answers still costs the proxy's call into an ingress replica and the ingress's parsing,
validation and tokenization of the body, on the machine the engines compute on. When the
ingress refuses a whole tier (``TierGate``), its 429 carries ``x-slo-tier-hold-ms``: how long
that tier stays refused. ``ProxyTierGate``, an ASGI middleware Ray Serve loads into every
proxy beside ``IngressGuard``, remembers it and answers that tier's next requests on the
same path with the same 429 (reason, ``Retry-After``) itself until the hold ends, without
reading their bodies.

It only answers for a client the ingress has already authenticated for that tier: the
``Authorization`` header of a request answered 200, or refused with a hold, is remembered (as
a digest) for its tier. Anyone else goes to the ingress and gets its 401 / 403 as before. A
request whose body or SLO headers are malformed gets the 429 while its tier is held, and its
400 when it is sent again. Per proxy, no shared state; it imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

HOLD_HEADER = b"x-slo-tier-hold-ms"  # on the ingress's 429: the tier is refused this long
TIER_HEADER = b"x-slo-tier"
AUTH_HEADER = b"authorization"
REFUSED_AT_HEADER = b"x-refused-at"  # "proxy" on the 429s answered here
MAX_CLIENTS = 4096  # remembered authorizations per (path, tier); the set restarts when full
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Key = tuple[str, str | None]  # (path, the request's x-slo-tier header or None)


@dataclass(frozen=True, slots=True)
class Held:
    """A tier the ingress refuses until ``until_s`` (monotonic), and the 429 it answered."""

    until_s: float
    tier: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ProxyTierGate:
    """ASGI middleware: answer a held tier's requests with the ingress's own 429."""

    def __init__(self, app: Any, on_refuse: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.app, self.on_refuse, self.clock = app, on_refuse, clock
        self._held: dict[Key, Held] = {}
        self._clients: dict[Key, set[bytes]] = {}

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        tier = client = None
        for name, value in scope.get("headers") or ():
            name = name.lower()
            if name == TIER_HEADER:
                tier = value.decode("latin-1").strip()
            elif name == AUTH_HEADER:
                client = value
        key: Key = (scope.get("path", ""), tier)
        who = hashlib.blake2b(client or b"", digest_size=16).digest()
        held = self._held.get(key)
        if held is not None:
            if self.clock() >= held.until_s:
                del self._held[key]
            elif who in self._clients.get(key, ()):
                await self._answer(send, held)
                return
        await self.app(scope, receive, _Watch(self, key, who, send))

    def learn(self, key: Key, who: bytes, status: int, headers: list[tuple[bytes, bytes]],
              body: bytes) -> None:
        """What one answer of the ingress says: the client passed its checks for this tier
        (200, or a 429 with a hold), and whether the tier is now held."""
        hold_ms = _header(headers, HOLD_HEADER)
        if status == 200 or (status == 429 and hold_ms is not None):
            clients = self._clients.setdefault(key, set())
            if len(clients) >= MAX_CLIENTS:
                clients.clear()
            clients.add(who)
        if status != 429 or hold_ms is None:
            return
        try:
            hold_s = float(hold_ms) / 1000.0
        except ValueError:
            return
        if hold_s > 0:
            kept = [(k, v) for k, v in headers
                    if k.lower() not in (b"content-length", HOLD_HEADER, b"x-ingress-replica")]
            tier = (_header(headers, TIER_HEADER) or b"").decode("latin-1") or (key[1] or "")
            self._held[key] = Held(self.clock() + hold_s, tier, kept, body)

    async def _answer(self, send: Send, held: Held) -> None:
        if self.on_refuse is not None:
            self.on_refuse(held.tier)
        headers = [*held.headers, (b"content-length", str(len(held.body)).encode()),
                   (REFUSED_AT_HEADER, b"proxy")]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": held.body, "more_body": False})


class _Watch:
    """Forwards the ingress's answer to the client and tells the gate what it said (the body
    is kept only for a 429 that holds its tier: a short JSON error)."""

    def __init__(self, gate: ProxyTierGate, key: Key, who: bytes, send: Send):
        self.gate, self.key, self.who, self.send = gate, key, who, send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message.get("status", 0))
            self.headers = list(message.get("headers") or [])
            if self.status == 429 and _header(self.headers, HOLD_HEADER) is not None:
                self.body = []
            else:
                self.gate.learn(self.key, self.who, self.status, self.headers, b"")
        elif message["type"] == "http.response.body" and self.body is not None:
            self.body.append(message.get("body", b""))
            if not message.get("more_body"):
                self.gate.learn(self.key, self.who, self.status, self.headers,
                                b"".join(self.body))
                self.body = None
        await self.send(message)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def refusal_counter() -> Callable[[str], None]:
    """Counts the proxy's refusals in the ingress's own counter (``IngressMetrics``: tier,
    status 429), so dashboards see every refusal wherever it was answered."""
    from slidingserve.serve.metrics import IngressMetrics

    metrics = IngressMetrics()
    return lambda tier: metrics.refused(tier or "unknown", 429)
