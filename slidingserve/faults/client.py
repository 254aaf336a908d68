"""One HTTP request, classified: served, refused (429), explicit error, or lost.

Every call is bounded by ``timeout_s``. A request is *answered* when the client learns what
happened to it: a complete response (``[DONE]`` for a stream), a 429, or an error that says
why (a JSON ``error.message`` or an SSE error event). Anything else is *lost*: a timeout, a
dropped connection, a stream that stops without ``[DONE]`` or an error, a 5xx with no message.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from slidingserve.serve.bench_http import is_output, sse_lines
from slidingserve.serve.slo_headers import TTFT_MEASURED_HEADER

Kind = Literal["served", "rejected", "error", "lost"]


@dataclass
class Result:
    kind: Kind
    status: int | None
    message: str = ""
    replica: str | None = None
    tokens: int = 0
    ttft_s: float | None = None  # streams: first token at the client, from the send
    # whole answers: the ingress's own TTFT (x-ttft-ms: arrival there to its first token)
    ingress_ttft_s: float | None = None
    latency_s: float = 0.0
    retry_after: str | None = None
    retried_from: str | None = None  # x-retried-from: the replica that failed before a token
    ingress: str | None = None  # x-ingress-replica: the ingress replica that answered
    ingress_retried: bool = False  # x-ingress-retried: the proxy sent it to a second ingress
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.kind != "lost"


def error_message(body: bytes) -> str | None:
    """The ``error.message`` of an OpenAI-shaped error body, or None when there is none."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    err = data.get("error") if isinstance(data, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    return msg if isinstance(msg, str) and msg.strip() else None


def _ms_header(headers: httpx.Headers, name: str) -> float | None:
    """A header of milliseconds, in seconds (None when absent or not a finite number >= 0)."""
    try:
        ms = float(headers.get(name, ""))
    except ValueError:
        return None
    return ms / 1e3 if math.isfinite(ms) and ms >= 0 else None


def classify_response(status: int, body: bytes, headers: httpx.Headers) -> Result:
    """A non-streamed response (or a streamed one that was refused before it started)."""
    msg = error_message(body)
    if status == 200:
        try:
            ok = bool(json.loads(body).get("choices") is not None)
        except (ValueError, AttributeError):
            ok = False
        kind: Kind = "served" if ok else "lost"
        return Result(kind, status, "" if ok else "200 without a completion body",
                      headers.get("x-served-by"), retried_from=headers.get("x-retried-from"),
                      ingress_ttft_s=_ms_header(headers, TTFT_MEASURED_HEADER))
    if status == 429:
        return Result("rejected" if msg else "lost", status, msg or "429 without a message",
                      retry_after=headers.get("retry-after"))
    if msg is not None:
        return Result("error", status, msg, headers.get("x-served-by"))
    return Result("lost", status, f"{status} without an error message: {body[:120]!r}")


async def send(client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str],
               timeout_s: float, *, stream: bool = False, raw: bytes | None = None,
               on_token: Any = None, on_start: Any = None) -> Result:
    """Send one request and classify what came back; never waits longer than ``timeout_s``.
    ``on_start(headers)`` is called when a streamed response's headers arrive."""
    import asyncio

    t0 = time.perf_counter()
    try:
        res = await asyncio.wait_for(
            _send(client, path, body, headers, stream, raw, on_token, on_start, t0), timeout_s
        )
    except TimeoutError:
        res = Result("lost", None, f"no answer within {timeout_s:g}s (hung)")
    except httpx.HTTPError as exc:
        res = Result("lost", None, f"{type(exc).__name__}: {exc}")
    res.latency_s = time.perf_counter() - t0
    return res


def _ingress(res: Result, headers: httpx.Headers) -> Result:
    res.ingress = headers.get("x-ingress-replica")
    res.ingress_retried = headers.get("x-ingress-retried") == "1"
    return res


async def _send(client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str],
                stream: bool, raw: bytes | None, on_token: Any, on_start: Any,
                t0: float) -> Result:
    kwargs: dict[str, Any] = {"headers": headers}
    if raw is not None:
        kwargs["content"] = raw
    else:
        kwargs["json"] = body
    if not stream:
        resp = await client.post(path, **kwargs)
        return _ingress(classify_response(resp.status_code, resp.content, resp.headers),
                        resp.headers)
    async with client.stream("POST", path, **kwargs) as resp:
        return _ingress(await _read_stream(resp, on_token, on_start, t0), resp.headers)


async def _read_stream(resp: httpx.Response, on_token: Any, on_start: Any, t0: float) -> Result:
    """Read an SSE stream to its end. ``on_token(n, replica)`` is called for every chunk with
    output, ``n`` counting them (a chunk whose text is still empty counts: the client has
    received output of the request)."""
    if on_start is not None:
        on_start(resp.headers)
    if resp.status_code != 200:
        content = await resp.aread()
        return classify_response(resp.status_code, content, resp.headers)
    replica, retried = resp.headers.get("x-served-by"), resp.headers.get("x-retried-from")
    tokens, chunks, ttft = 0, 0, None
    async for line in sse_lines(resp.aiter_bytes()):
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            return Result("served", 200, "", replica, tokens, ttft, retried_from=retried)
        event = json.loads(data)
        if "error" in event:
            msg = str(event["error"].get("message") or "")
            return Result("error" if msg else "lost", 200, msg or "empty stream error",
                          replica, tokens, ttft, retried_from=retried)
        choices = event.get("choices", [])
        if any(c.get("text") or (c.get("delta") or {}).get("content") for c in choices):
            tokens += 1
        if any(is_output(c) for c in choices):
            chunks += 1
            if ttft is None:  # (its text may still be empty: ``bench_http.is_output``)
                ttft = time.perf_counter() - t0
            if on_token is not None:
                on_token(chunks, replica)
    return Result("lost", 200, "stream ended without [DONE] or an error event", replica,
                  tokens, ttft)


def tally(results: list[Result]) -> dict[str, Any]:
    """``sent``, ``answered``, ``lost`` and the count of each kind, plus a few lost messages."""
    kinds = {k: sum(1 for r in results if r.kind == k)
             for k in ("served", "rejected", "error", "lost")}
    lost = [r.message for r in results if r.kind == "lost"]
    return {"sent": len(results), "answered": len(results) - kinds["lost"],
            "lost": kinds["lost"], **kinds, "lost_examples": sorted(set(lost))[:5]}
