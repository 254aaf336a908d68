"""The HTTP side: OpenAI-compatible routes, as vLLM's server has them, over the engine handle.

``IngressService`` turns one HTTP request into ``GenerateRequest``s (SLO headers, API key,
vLLM's request model and ``SamplingParams``, tokenization; one per prompt of a batched
completion), sends them to the engine deployment (through the slack router) and writes the
response: JSON once every choice has finished, or SSE whose headers and first chunk go out as
soon as the replicas have admitted the request, before the first token. ``build_api`` wires it
into a FastAPI app with ``/v1/models``, ``/version``, ``/metrics`` and ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.exceptions import VLLMClientError

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
from slidingserve.serve.openai_api import HTTPError
from slidingserve.serve.proxy_tier_gate import HOLD_HEADER as HOLD_HEADER_BYTES
from slidingserve.serve.responses import Responder
from slidingserve.serve.slo_headers import (
    DOWNGRADED_HEADER,
    TIER_ECHO_HEADER,
    TIER_HEADER,
    TTFT_MEASURED_HEADER,
    SLOHeaderError,
    parse_slo_headers,
)
from slidingserve.serve.tier_gate import TierGate
from slidingserve.slo.tiers import TierSet

__all__ = ["HTTPError", "IngressService", "body_limit_bytes", "build_api"]

log = logging.getLogger(__name__)
SERVED_BY_HEADER = "x-served-by"
RETRIED_FROM_HEADER = "x-retried-from"  # the replica that failed before the first token
INGRESS_REPLICA_HEADER = "x-ingress-replica"  # the ingress replica that answered
MAX_ATTEMPTS = 3  # sends of one request: one retry after a replica failed, plus unreached calls
RESEND_BACKOFF_S = 0.25  # before resending a call no replica took (times the attempt number)
HOLD_HEADER = HOLD_HEADER_BYTES.decode()  # on a held tier's 429: milliseconds it stays held
T = TypeVar("T")


def _refused(tier: str, why: str, retry_after_s: int, hold_s: float | None = None
             ) -> HTTPError:
    """The 429 of a request refused for load, with the reason and ``Retry-After``; for a
    tier held at the ingress, also the tier and how long it stays held (``HOLD_HEADER``), which
    the HTTP proxy's ``ProxyTierGate`` acts on."""
    headers = {"Retry-After": str(retry_after_s)}
    if hold_s is not None and hold_s > 0:
        headers |= {TIER_ECHO_HEADER: tier, HOLD_HEADER: f"{hold_s * 1e3:.0f}"}
    return HTTPError(429, f"SLO tier {tier!r}: {why}; retry later", TIER_HEADER, **headers)


@dataclass(slots=True)
class _Started:
    """One engine request admitted by a replica (updated in place when it is retried)."""

    req: GenerateRequest
    admitted: Admitted
    stream: Any
    retried_from: str | None
    first_token_s: float | None = None  # wall time its first token reached the ingress


class IngressService:
    """Validates, tokenizes and forwards requests; writes OpenAI-shaped responses."""

    def __init__(self, cfg: ServeAppConfig, tiers: TierSet, engine: Any, tokenizer: Any,
                 ready: Callable[[], Awaitable[bool]] | None = None,
                 defaults: Mapping[str, Any] | None = None,
                 scrape: Callable[[], Awaitable[str]] | None = None):
        self.cfg, self.tiers, self.engine, self.tokenizer = cfg, tiers, engine, tokenizer
        self.ready = ready  # whether an engine replica can serve (None: assume it can)
        self.defaults = dict(defaults or {})  # the model's generation_config sampling defaults
        self.scrape = scrape  # the cluster's Prometheus text, for /metrics (None: not served)
        self.keys = KeyTable(cfg.auth.resolved_keys(), tiers)
        self.metrics = IngressMetrics()
        self.gate = TierGate(cfg.admission.ingress_hold_s if cfg.admission.enabled else None)
        self.model_name = cfg.engine.name
        vocab = len(tokenizer) if tokenizer is not None else 0
        self.limits = oa.ModelLimits(cfg.engine.max_model_len, vocab)
        log.info("ingress: %s", self.keys.describe())

    # ---- one request --------------------------------------------------------------------
    async def complete(self, body: oa.AnyRequest, headers: Mapping[str, str]) -> Response:
        arrival = time.time()
        tier_hint = headers.get(TIER_HEADER, self.tiers.default_name)
        try:
            return await self._complete(body, headers, arrival)
        except HTTPError as err:
            known = tier_hint in set(self.tiers)
            self.metrics.refused(tier_hint if known else "unknown", err.status)
            return JSONResponse(err.body(), err.status, headers=err.headers)

    async def _complete(self, body: oa.AnyRequest, headers: Mapping[str, str],
                        arrival: float) -> Response:
        try:
            slo = parse_slo_headers(headers, self.tiers)
        except SLOHeaderError as err:
            raise HTTPError(400, str(err), err.header) from None
        try:
            self.keys.check(headers.get("authorization"), slo.tier)
        except AuthError as err:
            raise HTTPError(err.status, err.message, "authorization") from None
        if body.model is not None and body.model != self.model_name:
            raise HTTPError(404, f"The model `{body.model}` does not exist (this server serves "
                            f"`{self.model_name}`).", "model")
        oa.check_supported(body)
        chat = isinstance(body, ChatCompletionRequest)
        prompts = ([oa.chat_prompt(body, self.tokenizer)] if isinstance(body, ChatCompletionRequest)
                   else oa.completion_prompts(body, self.tokenizer))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        reqs = []
        for i, prompt in enumerate(prompts):
            n_max = oa.max_tokens_for(body, len(prompt.token_ids), self.limits.max_model_len,
                                      self.defaults)
            params = oa.sampling_params(body, n_max, self.defaults, self.limits,
                                        len(prompt.token_ids))
            sub_id = rid if len(prompts) == 1 else f"{rid}-{i}"
            reqs.append(GenerateRequest(sub_id, prompt.token_ids, slo, params, arrival))
        now = time.time()
        closed = self.gate.refusal(slo.priority, now)
        if closed is not None:  # the replicas refuse this whole tier right now
            raise _refused(slo.tier, closed.reason, closed.retry_after_s,
                           self._proxy_hold(closed.until_s - now))
        started = await self._start_all(reqs)
        responder = Responder(body, rid, self.model_name, prompts, self.tokenizer)
        if body.stream:
            return StreamingResponse(self._sse(responder, started), media_type="text/event-stream",
                                     headers=_headers(started))
        return await self._collect(responder, started, arrival)

    def _proxy_hold(self, hold_s: float) -> float | None:
        """How long the proxy may answer a held tier itself (None: it may not)."""
        return hold_s if self.cfg.admission.hold_at_proxy else None

    async def _start_all(self, reqs: list[GenerateRequest]) -> list[_Started]:
        """Admit every prompt's request; if one is refused, the others are cancelled."""
        got = await asyncio.gather(*(self._start(r) for r in reqs), return_exceptions=True)
        failed = [g for g in got if isinstance(g, BaseException)]
        if failed:
            for g in got:
                if isinstance(g, _Started):
                    g.stream.cancel()
            raise failed[0]
        return [g for g in got if isinstance(g, _Started)]

    async def _start(self, req: GenerateRequest, retried_from: str | None = None) -> _Started:
        """Send ``req`` to a replica and wait for its admission (not its first token). A call
        that never reached a replica (a dead one Serve had not dropped yet) is sent again, at
        most ``MAX_ATTEMPTS`` sends in all; a refusal is a 429 with ``Retry-After``, and the
        engine's refusal of the request's parameters (vLLM's input checks, before the replica
        admits it) a 400 with vLLM's message, before any stream starts."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            stream = self.engine.options(stream=True).generate.remote(req)
            try:
                first = await stream.__anext__()
            except Exception as exc:  # no replica took it: try another, then say so
                if attempt < MAX_ATTEMPTS:
                    log.warning("request %s: no replica took it (%s); sending it again",
                                req.request_id, type(exc).__name__)
                    retried_from = retried_from or "unknown"
                    await asyncio.sleep(RESEND_BACKOFF_S * attempt)  # let Serve drop a dead one
                    continue
                raise HTTPError(503, f"engine unavailable: {type(exc).__name__}: {exc}") from None
            if isinstance(first, Rejected):
                why = first.reason or (f"predicted TTFT {first.predicted_ttft_s:.3f}s exceeds "
                                       f"the target {first.target_s:.3f}s on every replica")
                hold_s = None
                if first.tier_wide:
                    self.gate.close(req.slo.priority, why, first.retry_after_s, time.time())
                    hold_s = self._proxy_hold(self.gate.hold_s)
                raise _refused(req.slo.tier, why, first.retry_after_s, hold_s)
            if isinstance(first, StreamError):  # the engine refused the parameters (a 400)
                raise HTTPError(first.status, first.message, first.param)
            assert isinstance(first, Admitted), first
            return _Started(req, first, stream, retried_from)
        raise AssertionError("unreachable")

    async def _events(self, st: _Started, buffered: bool = False) -> AsyncIterator[StreamEvent]:
        """The request's events after admission. A replica that fails before the first token
        has sent nothing of this request yet: it goes once more to another replica (``st``
        then names the failed one). A failure after tokens flowed is an explicit error, unless
        ``buffered`` (a whole answer, not a stream): its events are held until the request
        ends, the client has seen none of them, and it is retried the same way. A dying
        replica can still admit for a moment (its node's raylet gone, its process not yet): a
        resend that the failed replica itself admitted was not served elsewhere, so it does
        not count as the one retry (at most ``MAX_ATTEMPTS`` sends in all)."""
        produced = False
        sends = 1
        while True:
            held: list[StreamEvent] = []
            try:
                async for ev in st.stream:
                    if isinstance(ev, TokenDelta) and (ev.token_ids or ev.finish_reason):
                        produced = True
                        if st.first_token_s is None and ev.token_ids:
                            st.first_token_s = time.time()
                    if buffered:
                        held.append(ev)
                    else:
                        yield ev
                for ev in held:
                    yield ev
                return
            except Exception as exc:
                elsewhere = st.retried_from not in (None, "unknown") and \
                    st.admitted.replica != st.retried_from
                if (produced and not buffered) or elsewhere or sends >= MAX_ATTEMPTS:
                    for ev in held:  # a whole answer's partial output goes with the error
                        yield ev
                    yield StreamError(f"engine failed: {type(exc).__name__}: {exc}")
                    return
                sends += 1
                failed = st.admitted.replica
                log.warning("request %s: replica %s failed before %s (%s); retrying once "
                            "elsewhere", st.req.request_id, failed,
                            "the answer was complete" if produced else "its first token",
                            type(exc).__name__)
                produced, st.first_token_s = False, None
                st.stream.cancel()
                st.req = replace(st.req, avoid=(*st.req.avoid, failed))
                try:
                    again = await self._start(st.req, failed)
                except HTTPError as err:
                    yield StreamError(err.message)
                    return
                st.admitted, st.stream, st.retried_from = again.admitted, again.stream, failed

    async def _collect(self, responder: Responder, started: list[_Started],
                       arrival: float) -> Response:
        prompt_logprobs: dict[int, Any] = {}
        async for i, ev in _merge([self._events(st, buffered=True) for st in started]):
            if isinstance(ev, StreamError):
                if ev.status < 500:  # vLLM refused the parameters after taking them
                    for st in started:
                        st.stream.cancel()
                    return JSONResponse(oa.error_body(ev.message, ev.param, ev.status),
                                        ev.status, headers=_headers(started))
                partial = {"text": "".join(responder.choices[0].text), **ev.partial}
                return _partial_error(ev.message, _headers(started), partial)
            assert isinstance(ev, TokenDelta), ev
            if ev.prompt_logprobs is not None:
                prompt_logprobs[i] = ev.prompt_logprobs
            responder.add(i, ev)
        headers = _headers(started)
        firsts = [st.first_token_s for st in started if st.first_token_s is not None]
        first_token_s = min(firsts) if firsts else time.time()
        headers[TTFT_MEASURED_HEADER] = f"{(first_token_s - arrival) * 1e3:.1f}"
        return JSONResponse(responder.response(prompt_logprobs), headers=headers)

    async def _sse(self, responder: Responder, started: list[_Started]) -> AsyncIterator[str]:
        for opening in responder.opening():  # at once: a long TTFT must not look like a hang
            yield opening
        try:
            async for i, ev in _merge([self._events(st) for st in started]):
                if isinstance(ev, StreamError):
                    yield oa.stream_error(ev.message, ev.status)
                    return
                assert isinstance(ev, TokenDelta), ev
                chunk = responder.chunk(i, ev, ev.prompt_logprobs)
                if chunk is not None:
                    yield chunk
        except Exception as exc:  # the stream ends with an explicit error, never silently
            yield oa.stream_error(f"stream failed: {type(exc).__name__}: {exc}")
            return
        if responder.include_usage:
            yield responder.usage_chunk()
        yield oa.STREAM_DONE


def _headers(started: list[_Started]) -> dict[str, str]:
    """SLO tier echo, serving replica(s), downgrade and retry of the request's admissions."""
    first = started[0].admitted
    out = {TIER_ECHO_HEADER: first.slo.tier,
           SERVED_BY_HEADER: ",".join(dict.fromkeys(st.admitted.replica for st in started))}
    if first.downgraded_from:
        out[DOWNGRADED_HEADER] = first.downgraded_from
    retried = [st.retried_from for st in started if st.retried_from is not None]
    if retried:
        out[RETRIED_FROM_HEADER] = ",".join(dict.fromkeys(retried))
    return out


async def _merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as they come, tagged with the iterator's index."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if item is done:
                left -= 1
                continue
            yield i, item
    finally:
        for task in tasks:
            task.cancel()


def _partial_error(message: str, headers: dict[str, str], partial: dict[str, Any]
                   ) -> JSONResponse:
    body = oa.error_body(message, None, 500)
    body["error"]["partial"] = partial
    return JSONResponse(body, 500, headers=headers)


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
        await JSONResponse(oa.error_body(msg, "body", 413), 413)(scope, receive, send)


class NameReplica:
    """ASGI middleware: every HTTP response names the ingress replica that gave it."""

    def __init__(self, app: Any, replica: str):
        self.app, self.header = app, (INGRESS_REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, named)


def build_api(service: IngressService, replica: str | None = None) -> FastAPI:
    """The FastAPI app: /v1/completions, /v1/chat/completions, /v1/models[/{id}], /version,
    /metrics, /health. With ``replica``, every response names it (``x-ingress-replica``)."""
    api = FastAPI(title="SlidingServe", version="0.1.0")
    api.add_middleware(BodyLimit, limit=body_limit_bytes(service.cfg.engine.max_model_len))
    if replica is not None:
        api.add_middleware(NameReplica, replica=replica)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = oa.validation_message(exc.errors())
        return JSONResponse(oa.error_body(message, param), 400)

    @api.exception_handler(VLLMClientError)
    async def _vllm(_: Request, exc: VLLMClientError) -> JSONResponse:
        """A vLLM request validator's refusal (raised while the body is parsed)."""
        return JSONResponse(oa.error_body(oa.clean_message(exc), getattr(exc, "parameter", None)),
                            400)

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """404, 405 and unparseable bodies in the same error shape as every other refusal."""
        msg = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8, too deep)
            msg += ": the body must be a UTF-8 JSON object of reasonable nesting depth"
        return JSONResponse(oa.error_body(msg, None, exc.status_code), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.post("/v1/completions")
    async def completions(body: oa.CompletionBody, request: Request) -> Response:
        return await service.complete(body, request.headers)

    @api.post("/v1/chat/completions")
    async def chat(body: oa.ChatCompletionBody, request: Request) -> Response:
        return await service.complete(body, request.headers)

    def card() -> dict[str, Any]:
        return {"id": service.model_name, "object": "model", "created": 0,
                "owned_by": "slidingserve", "root": service.cfg.engine.model, "parent": None,
                "max_model_len": service.cfg.engine.max_model_len, "permission": [],
                "slo_tiers": list(service.tiers)}

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card()]}

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        if model_id != service.model_name:
            msg = f"The model `{model_id}` does not exist."
            return JSONResponse(oa.error_body(msg, "model", 404), 404)
        return JSONResponse(card())

    @api.get("/version")
    async def version() -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        import vllm

        try:
            ours = dist_version("slidingserve")
        except PackageNotFoundError:
            ours = "unknown"
        return {"version": vllm.__version__, "slidingserve": ours}

    @api.get("/metrics")
    async def metrics() -> Response:
        """The cluster's Prometheus metrics (``ray_slidingserve_*`` and Ray's own), on the
        serving port."""
        if service.scrape is None:
            return JSONResponse(oa.error_body("metrics are not exported here", None, 404), 404)
        text = await service.scrape()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/health")
    async def health() -> Response:
        """200 once an engine replica can serve; 503 while none can (starting, or all down)."""
        info = {"model": service.model_name, "tiers": list(service.tiers),
                "default_tier": service.tiers.default_name, "auth": service.keys.describe()}
        if service.ready is not None and not await service.ready():
            msg = "no engine replica is ready yet (the model is loading) or none is left"
            return JSONResponse({"status": "starting", **info, **oa.error_body(msg, None, 503)},
                                503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok", **info})

    return api

