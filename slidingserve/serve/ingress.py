"""The HTTP side: OpenAI-compatible routes over an engine deployment handle.

``IngressService`` turns one HTTP request into a ``GenerateRequest`` (SLO headers, API key,
tokenization), sends it to the engine deployment (through the slack router) and writes the
response: JSON, or SSE that starts once the first token is known so the measured TTFT can
travel in a header. ``build_api`` wires it into a FastAPI app.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slidingserve.serve import openai_api as oa
from slidingserve.serve.auth import AuthError, KeyTable
from slidingserve.serve.config import ServeAppConfig
from slidingserve.serve.messages import (
    Admitted,
    GenerateRequest,
    Rejected,
    StreamError,
    StreamEvent,
    TokenDelta,
)
from slidingserve.serve.metrics import IngressMetrics
from slidingserve.serve.slo_headers import (
    DOWNGRADED_HEADER,
    TIER_ECHO_HEADER,
    TIER_HEADER,
    TTFT_MEASURED_HEADER,
    SLOHeaderError,
    parse_slo_headers,
)
from slidingserve.slo.tiers import TierSet

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 16
SERVED_BY_HEADER = "x-served-by"
RETRIED_FROM_HEADER = "x-retried-from"  # the replica that failed before the first token
MAX_ATTEMPTS = 3  # sends of one request: one retry after a replica failed, plus unreached calls


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 429:
            kind = "rate_limit_error"
        return JSONResponse(
            oa.error_body(self.message, self.param, kind), self.status, headers=self.headers
        )


class IngressService:
    """Validates, tokenizes and forwards requests; writes OpenAI-shaped responses."""

    def __init__(self, cfg: ServeAppConfig, tiers: TierSet, engine: Any, tokenizer: Any,
                 ready: Callable[[], Awaitable[bool]] | None = None):
        self.cfg, self.tiers, self.engine, self.tokenizer = cfg, tiers, engine, tokenizer
        self.ready = ready  # whether an engine replica can serve (None: assume it can)
        self.keys = KeyTable(cfg.auth.resolved_keys(), tiers)
        self.metrics = IngressMetrics()
        self.model_name = cfg.engine.name
        log.info("ingress: %s", self.keys.describe())

    # ---- one request --------------------------------------------------------------------
    async def complete(self, body: oa.CompletionBody | oa.ChatBody, headers: Mapping[str, str]):
        arrival = time.time()
        tier_hint = headers.get(TIER_HEADER, self.tiers.default_name)
        try:
            return await self._complete(body, headers, arrival)
        except HTTPError as err:
            known = tier_hint in set(self.tiers)
            self.metrics.refused(tier_hint if known else "unknown", err.status)
            return err.response()

    async def _complete(self, body, headers: Mapping[str, str], arrival: float) -> Response:
        try:
            slo = parse_slo_headers(headers, self.tiers)
        except SLOHeaderError as err:
            raise HTTPError(400, str(err), err.header) from None
        try:
            self.keys.check(headers.get("authorization"), slo.tier)
        except AuthError as err:
            raise HTTPError(err.status, err.message, "authorization") from None
        if body.model is not None and body.model != self.model_name:
            raise HTTPError(404, f"model {body.model!r} not served (serving {self.model_name!r})",
                            "model")
        chat = isinstance(body, oa.ChatBody)
        ids = self._prompt_ids(body)
        sampling = body.sampling(DEFAULT_MAX_TOKENS)
        limit = self.cfg.engine.max_model_len
        if len(ids) + sampling["max_tokens"] > limit:
            n_max = sampling["max_tokens"]
            raise HTTPError(400, f"prompt ({len(ids)} tokens) + max_tokens ({n_max}) exceeds "
                            f"max_model_len {limit}", "max_tokens")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        req = GenerateRequest(rid, ids, slo, sampling, arrival)
        first, stream, head, retried_from = await self._start(req)
        out_headers = {
            TIER_ECHO_HEADER: first.slo.tier,
            TTFT_MEASURED_HEADER: f"{(time.time() - arrival) * 1000.0:.1f}",
            SERVED_BY_HEADER: first.replica,
        }
        if first.downgraded_from:
            out_headers[DOWNGRADED_HEADER] = first.downgraded_from
        if retried_from is not None:
            out_headers[RETRIED_FROM_HEADER] = retried_from
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                self._sse(rid, chat, head, stream, include_usage, len(ids)),
                media_type="text/event-stream",
                headers=out_headers,
            )
        return await self._collect(rid, chat, head, stream, len(ids), out_headers)

    async def _start(self, req: GenerateRequest) -> tuple[Admitted, Any, list[StreamEvent],
                                                          str | None]:
        """Send ``req`` to a replica and wait for its first token (the response's headers wait
        for it). A replica that fails before the first token (it died, or Serve lost it) has
        sent the client nothing yet: the request goes once more to another replica, and the
        client sees one answer (``x-retried-from`` names the failed replica). A failure after
        tokens flowed is the caller's explicit error. A call that never reached a replica (a
        dead one Serve had not dropped yet) is sent again too, at most ``MAX_ATTEMPTS`` in all.
        Returns (admission, stream, events so far, failed replica or None)."""
        retried_from: str | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            stream = self.engine.options(stream=True).generate.remote(req)
            try:
                first = await stream.__anext__()
            except Exception as exc:  # no replica took it: try another, then say so
                if attempt < MAX_ATTEMPTS:
                    log.warning("request %s: no replica took it (%s); sending it again",
                                req.request_id, type(exc).__name__)
                    retried_from = retried_from or "unknown"
                    continue
                raise HTTPError(503, f"engine unavailable: {type(exc).__name__}: {exc}") from None
            if isinstance(first, Rejected):
                why = first.reason or (f"predicted TTFT {first.predicted_ttft_s:.3f}s exceeds "
                                       f"the target {first.target_s:.3f}s on every replica")
                raise HTTPError(429, f"SLO tier {req.slo.tier!r}: {why}; retry later",
                                TIER_HEADER, **{"Retry-After": str(first.retry_after_s)})
            assert isinstance(first, Admitted), first
            head: list[StreamEvent] = []
            try:
                async for ev in stream:  # hold the headers until the first token: TTFT measured
                    head.append(ev)
                    if not isinstance(ev, TokenDelta) or ev.token_ids or ev.finish_reason:
                        break
            except Exception as exc:
                if attempt < MAX_ATTEMPTS and retried_from in (None, "unknown"):
                    log.warning("request %s: replica %s failed before its first token (%s); "
                                "retrying once elsewhere", req.request_id, first.replica,
                                type(exc).__name__)
                    stream.cancel()
                    retried_from = first.replica
                    continue
                head.append(StreamError(f"engine failed: {type(exc).__name__}: {exc}"))
            return first, stream, head, retried_from
        raise AssertionError("unreachable")

    def _prompt_ids(self, body: oa.CompletionBody | oa.ChatBody) -> list[int]:
        if isinstance(body, oa.ChatBody):
            msgs = [m.model_dump(exclude_none=True) for m in body.messages]
            if getattr(self.tokenizer, "chat_template", None):  # the template adds BOS itself
                text = self.tokenizer.apply_chat_template(
                    msgs, add_generation_prompt=True, tokenize=False
                )
                return list(self.tokenizer.encode(text, add_special_tokens=False))
            text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
            return list(self.tokenizer.encode(text))
        if isinstance(body.prompt, str):
            return list(self.tokenizer.encode(body.prompt))
        vocab = len(self.tokenizer)
        bad = [t for t in body.prompt if t < 0 or t >= vocab]
        if bad:
            raise HTTPError(400, f"prompt token id {bad[0]} outside the vocabulary [0, {vocab})",
                            "prompt")
        return list(body.prompt)

    async def _collect(self, rid, chat, head, stream, n_prompt, headers) -> Response:
        text: list[str] = []
        finish, n_out = None, 0
        try:
            async for ev in _chain(head, stream):
                if isinstance(ev, StreamError):
                    return _partial_error(ev.message, text, headers, ev.partial)
                assert isinstance(ev, TokenDelta)
                text.append(ev.text)
                finish, n_out = ev.finish_reason or finish, ev.num_generated
        except Exception as exc:
            return _partial_error(f"engine failed: {type(exc).__name__}: {exc}", text, headers, {})
        body = oa.completion_response(rid, self.model_name, "".join(text), finish, n_prompt,
                                      n_out, chat)
        return JSONResponse(body, headers=headers)

    async def _sse(self, rid, chat, head, stream, include_usage, n_prompt) -> AsyncIterator[str]:
        first, n_out = True, 0
        try:
            async for ev in _chain(head, stream):
                if isinstance(ev, StreamError):
                    yield oa.stream_error(ev.message)
                    return
                assert isinstance(ev, TokenDelta)
                n_out = ev.num_generated
                yield oa.stream_chunk(rid, self.model_name, ev.text, ev.finish_reason, chat, first)
                first = False
        except Exception as exc:  # the stream ends with an explicit error, never silently
            yield oa.stream_error(f"stream failed: {type(exc).__name__}: {exc}")
            return
        if include_usage:
            yield "data: " + oa.json.dumps({"id": rid, "choices": [],
                                            "usage": oa.usage(n_prompt, n_out)}) + "\n\n"
        yield oa.STREAM_DONE


def _partial_error(message: str, text: list[str], headers: dict[str, str],
                   partial: dict[str, Any]) -> JSONResponse:
    body = oa.error_body(message, None, "server_error")
    body["error"]["partial"] = {"text": "".join(text), **partial}
    return JSONResponse(body, 500, headers=headers)


async def _chain(head: list[StreamEvent], rest: Any) -> AsyncIterator[StreamEvent]:
    for ev in head:
        yield ev
    if head and isinstance(head[-1], TokenDelta) and head[-1].finish_reason:
        return
    if head and isinstance(head[-1], StreamError):
        return
    async for ev in rest:
        yield ev


def body_limit_bytes(max_model_len: int) -> int:
    """Largest request body accepted: room for ``max_model_len`` tokens of text or JSON ids."""
    return max(2**20, 64 * max_model_len)


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before anything parses it.

    The body is read here (at most ``limit + 1`` bytes, chunked or not) and replayed to the
    app, so an oversized upload never reaches JSON decoding or the tokenizer.
    """

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared))
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
            if size > self.limit:
                return await self._refuse(scope, receive, send, size)
        body, replayed = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any, size: int) -> None:
        msg = (f"request body too large: {size} bytes or more (limit {self.limit} bytes, "
               "enough for max_model_len tokens)")
        await JSONResponse(oa.error_body(msg, "body"), 413)(scope, receive, send)


def build_api(service: IngressService) -> FastAPI:
    """The FastAPI app: /v1/completions, /v1/chat/completions, /v1/models, /health."""
    api = FastAPI(title="SlidingServe", version="0.1.0")
    api.add_middleware(BodyLimit, limit=body_limit_bytes(service.cfg.engine.max_model_len))

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        msg = f"field {loc}: {err['msg']} (got {err.get('input')!r})"
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            loc, msg = "body", f"body is not valid JSON: {reason} at character {loc}"
        return JSONResponse(oa.error_body(msg, loc), 400)

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """404, 405 and unparseable bodies in the same error shape as every other refusal."""
        msg = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8, too deep)
            msg += ": the body must be a UTF-8 JSON object of reasonable nesting depth"
        return JSONResponse(oa.error_body(msg), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.post("/v1/completions")
    async def completions(body: oa.CompletionBody, request: Request) -> Response:
        return await service.complete(body, request.headers)

    @api.post("/v1/chat/completions")
    async def chat(body: oa.ChatBody, request: Request) -> Response:
        return await service.complete(body, request.headers)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": service.model_name, "object": "model", "owned_by": "slidingserve",
                "created": 0, "slo_tiers": list(service.tiers)}
        return {"object": "list", "data": [card]}

    @api.get("/health")
    async def health() -> Response:
        """200 once an engine replica can serve; 503 while none can (starting, or all down)."""
        info = {"model": service.model_name, "tiers": list(service.tiers),
                "default_tier": service.tiers.default_name, "auth": service.keys.describe()}
        if service.ready is not None and not await service.ready():
            msg = "no engine replica is ready yet (the model is loading) or none is left"
            return JSONResponse({"status": "starting", **info, **oa.error_body(msg, None,
                                 "server_error")}, 503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok", **info})

    return api
