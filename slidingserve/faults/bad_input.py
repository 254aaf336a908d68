"""Hostile and malformed requests: hand-written cases plus fuzzing from the OpenAPI schema.

Each case must get a 4xx whose JSON body says what was wrong (``error.message``), or, for the
fuzzer's schema-valid cases, any answer that is not a 5xx. While the cases run, a canary sends
a small valid request every ``canary_period_s``: if hostile input crashed a replica or stalled
the server, the canary's answers would show it (a lost or slow canary).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from slidingserve.faults.client import Result, send, tally

OK_BODY = {"prompt": "ka ko ri su", "max_tokens": 4, "temperature": 0.0}


@dataclass(frozen=True)
class Case:
    """A hand-written hostile request and the status class it must get."""

    name: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as the body verbatim (invalid JSON, oversized)
    path: str = "/v1/completions"
    expect: int = 400  # exact status, or 4 = any 4xx


def hand_cases(max_model_len: int, oversize_bytes: int) -> list[Case]:
    long_prompt = list(range(10, 10 + 8)) * (max_model_len // 8 + 1)
    chat = "/v1/chat/completions"
    return [
        Case("max_tokens huge", {"prompt": "a", "max_tokens": 10**12}),
        Case("max_tokens negative", {"prompt": "a", "max_tokens": -5}),
        Case("max_tokens zero", {"prompt": "a", "max_tokens": 0}),
        Case("max_tokens float", {"prompt": "a", "max_tokens": 3.5}),
        Case("max_tokens string", {"prompt": "a", "max_tokens": "many"}),
        Case("max_completion_tokens huge", {"messages": [{"role": "user", "content": "hi"}],
                                            "max_completion_tokens": 10**9}, path=chat),
        Case("prompt longer than context", {"prompt": long_prompt, "max_tokens": 1}),
        Case("text prompt longer than context", {"prompt": "ka ko " * max_model_len,
                                                 "max_tokens": 1}),
        Case("prompt token id out of vocab", {"prompt": [1, 2, 10**9], "max_tokens": 1}),
        Case("prompt token id negative", {"prompt": [1, -1], "max_tokens": 1}),
        Case("prompt token id beyond int64", {"prompt": [2**70], "max_tokens": 1}),
        Case("empty prompt", {"prompt": "", "max_tokens": 1}),
        Case("empty token list", {"prompt": [], "max_tokens": 1}),
        Case("missing prompt", {"max_tokens": 1}),
        Case("prompt wrong type", {"prompt": {"a": 1}}),
        Case("prompt list mixing text and ids", {"prompt": ["a", 1]}),
        Case("messages wrong type", {"messages": "hi"}, path=chat),
        Case("message role not a string", {"messages": [{"role": 5, "content": "x"}]},
             path=chat),
        Case("message content null", {"messages": [{"role": "user", "content": None}]},
             path=chat),
        Case("empty messages", {"messages": []}, path=chat),
        Case("messages not a list", {"messages": True}, path=chat),
        Case("message without a role", {"messages": [{"author": {"role": "tool"}}],
                                        "max_tokens": 1}, path=chat),
        Case("routed_experts_prompt_start past the prompt",
             {"prompt": "a", "max_tokens": 1, "routed_experts_prompt_start": 10**9}),
        Case("thinking_token_budget without a reasoning parser",
             {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
              "thinking_token_budget": 8}, path=chat),
        Case("temperature negative", {"prompt": "a", "temperature": -1}),
        Case("temperature NaN (string)", {"prompt": "a", "temperature": "NaN"}),
        Case("top_p zero", {"prompt": "a", "top_p": 0}),
        Case("n = 0", {"prompt": "a", "n": 0}),
        Case("logprobs above the limit", {"prompt": "a", "logprobs": 21}),
        Case("top_logprobs without logprobs", {"messages": [{"role": "user", "content": "hi"}],
                                               "top_logprobs": 3}, path=chat),
        Case("logit_bias token out of vocab", {"prompt": "a", "logit_bias": {"99999999": 5}}),
        Case("image content part", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, path=chat),
        Case("beam search", {"prompt": "a", "use_beam_search": True}),
        Case("seed beyond int64", {"prompt": "a", "seed": 2**80, "max_tokens": 1}),
        Case("empty stop string", {"prompt": "a", "stop": "", "max_tokens": 1}),
        Case("empty stop in a list", {"prompt": "a", "stop": ["x", ""], "max_tokens": 1}),
        Case("stream wrong type", {"prompt": "a", "stream": "yes please"}),
        Case("echo not a bool", {"prompt": "a", "echo": "loud"}),
        Case("stream_options without stream", {"prompt": "a",
                                                "stream_options": {"include_usage": True}}),
        Case("unknown model", {"prompt": "a", "model": "gpt-17"}, expect=404),
        Case("body is a list", [1, 2, 3]),
        Case("body is null", None, raw=b"null"),
        Case("invalid JSON", raw=b'{"prompt": "a", "max_tokens": '),
        Case("invalid JSON (NaN literal)", raw=b'{"prompt": "a", "temperature": NaN}'),
        Case("not UTF-8", raw=b'{"prompt": "\xff\xfe"}'),
        Case("deeply nested JSON", raw=b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        Case("unknown tier", OK_BODY, {"x-slo-tier": "platinum"}),
        Case("tier with injected CR/LF (escaped)", OK_BODY, {"x-slo-tier": "batch%0d%0aX: 1"}),
        Case("ttft header not a number", OK_BODY, {"x-slo-ttft-ms": "soon"}),
        Case("ttft header negative", OK_BODY, {"x-slo-ttft-ms": "-5"}),
        Case("ttft header NaN", OK_BODY, {"x-slo-ttft-ms": "nan"}),
        Case("ttft header infinite", OK_BODY, {"x-slo-ttft-ms": "1e400"}),
        Case("ttft header above the tier", OK_BODY,
             {"x-slo-tier": "interactive", "x-slo-ttft-ms": "60000"}),
        Case("tpot header zero", OK_BODY, {"x-slo-tpot-ms": "0"}),
        Case("tier header 64 KiB", OK_BODY, {"x-slo-tier": "i" * 65536}, expect=4),
        Case("oversized body", raw=b'{"prompt": "' + b"a" * oversize_bytes + b'"}', expect=413),
        Case("wrong content type", raw=b"prompt=a", headers={"content-type": "text/plain"}),
        Case("GET on a POST route", path="/v1/completions?x=GET", expect=4),
        Case("unknown path", OK_BODY, path="/v1/engines/../../etc/passwd", expect=404),
    ]


def raw_injection_cases() -> list[tuple[str, bytes]]:
    """Requests a normal client cannot send: header values with bare CR/LF, NUL, no Host."""
    body = json.dumps(OK_BODY).encode()
    def req(extra: bytes) -> bytes:
        return (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"content-type: application/json\r\n" + extra +
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return [
        ("header injection: bare LF in tier",
         req(b"x-slo-tier: batch\nx-slo-tier: interactive\r\n")),
        ("header injection: CR in tier", req(b"x-slo-tier: batch\rinteractive\r\n")),
        ("header injection: NUL in tier", req(b"x-slo-tier: batch\x00interactive\r\n")),
        ("header name with space", req(b"x-slo tier: batch\r\n")),
        ("conflicting content-length", req(b"content-length: 5\r\n")),
    ]


def check_case(case: Case, res: Result) -> str | None:
    """None when the answer is right, otherwise what was wrong."""
    if res.status is None:
        return f"no answer: {res.message}"
    ok_status = (400 <= res.status < 500) if case.expect == 4 else res.status == case.expect
    if not ok_status:
        return f"status {res.status} (want {case.expect if case.expect != 4 else '4xx'})"
    if case.expect != 4 and case.expect != 404 and res.kind != "error":
        return f"no error message ({res.message})"
    return None


async def run_hand_cases(url: str, cases: list[Case], auth: dict[str, str], timeout_s: float,
                         transport: httpx.AsyncBaseTransport | None = None) -> list[dict[str, Any]]:
    """Send each case (over ``transport`` if given, e.g. straight into an ASGI app)."""
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, transport=transport) as client:
        for case in cases:
            headers = {**auth, **case.headers}
            if case.raw is not None:
                headers.setdefault("content-type", "application/json")
            if case.path.endswith("x=GET"):
                t0 = time.perf_counter()
                resp = await client.get(case.path, headers=headers)
                from slidingserve.faults.client import classify_response
                res = classify_response(resp.status_code, resp.content, resp.headers)
                res.latency_s = time.perf_counter() - t0
            else:
                res = await send(client, case.path, case.body, headers, timeout_s,
                                 raw=case.raw)
            problem = check_case(case, res)
            out.append({"case": case.name, "status": res.status, "message": res.message[:200],
                        "ok": problem is None, "problem": problem})
    return out


def raw_send(url: str, payload: bytes, timeout_s: float) -> tuple[int | None, str]:
    """Send bytes on a fresh loopback socket; (status, first line of the body or reason)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.sendall(payload)
        chunks: list[bytes] = []
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                if b"content-length:" not in head.lower() or len(rest) >= _clen(head):
                    break
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/1.1 "):
        return None, f"no HTTP answer ({len(raw)} bytes)"
    status = int(raw[9:12])
    return status, raw.partition(b"\r\n\r\n")[2][:200].decode(errors="replace")


def _clen(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def run_raw_cases(url: str, timeout_s: float) -> list[dict[str, Any]]:
    out = []
    for name, payload in raw_injection_cases():
        status, text = raw_send(url, payload, timeout_s)
        ok = status is not None and 400 <= status < 500
        out.append({"case": name, "status": status, "message": text, "ok": ok,
                    "problem": None if ok else f"status {status}: {text[:80]}"})
    return out


@dataclass(frozen=True)
class BadInputConfig:
    fuzz_examples: int = 25  # per operation and generation mode
    header_examples: int = 40
    oversize_bytes: int = 8 * 2**20
    canary_period_s: float = 1.0
    timeout_s: float = 60.0
    seed: int = 0


async def _canary(url: str, auth: dict[str, str], period_s: float, timeout_s: float,
                  stop: asyncio.Event, max_count: int = 3600) -> list[Result]:
    out: list[Result] = []
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        while not stop.is_set() and len(out) < max_count:
            out.append(await send(client, "/v1/completions", OK_BODY, auth, timeout_s))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)
    return out


async def run_bad_input(url: str, auth: dict[str, str], max_model_len: int,
                        cfg: BadInputConfig, replicas_alive: Any = None) -> dict[str, Any]:
    """Hand cases, raw-socket cases, schema fuzzing and SLO-header fuzzing, with a canary."""
    from slidingserve.faults.fuzz import FuzzReport, fuzz_schema, fuzz_slo_headers

    before = replicas_alive() if replicas_alive is not None else None
    stop = asyncio.Event()
    canary = asyncio.create_task(_canary(url, auth, cfg.canary_period_s, cfg.timeout_s, stop))
    t0 = time.time()
    hand = await run_hand_cases(url, hand_cases(max_model_len, cfg.oversize_bytes), auth,
                                cfg.timeout_s)
    raw = await asyncio.to_thread(run_raw_cases, url, cfg.timeout_s)
    fuzz = FuzzReport()
    await asyncio.to_thread(fuzz_schema, url, auth, cfg.fuzz_examples, cfg.seed, cfg.timeout_s,
                            fuzz)
    await asyncio.to_thread(fuzz_slo_headers, url, auth, cfg.header_examples, cfg.seed,
                            cfg.timeout_s, fuzz)
    stop.set()
    canaries = await canary
    after = replicas_alive() if replicas_alive is not None else None
    wrong = [c for c in hand + raw if not c["ok"]]
    canary_tally = tally(canaries)
    sent = len(hand) + len(raw) + fuzz.cases
    lost = sum(1 for c in hand + raw if c["status"] is None) + \
        sum(n for s, n in fuzz.by_status.items() if s == "599")
    return {
        "sent": sent, "answered": sent - lost, "lost": lost + canary_tally["lost"],
        "cases_run": sent, "hand_cases": len(hand), "raw_socket_cases": len(raw),
        "fuzz_cases": fuzz.cases, "wrong_answers": len(wrong) + len(fuzz.failures),
        "wrong_examples": wrong[:8], "fuzz": fuzz.to_dict(),
        "canary": {**canary_tally, "max_latency_s": round(max((r.latency_s for r in canaries),
                                                              default=0.0), 3)},
        "replicas_before": before, "replicas_after": after,
        "replica_crashed": before is not None and after != before,
        "duration_s": round(time.time() - t0, 1), "cases": hand + raw,
    }
