"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Every operation of ``/openapi.json`` gets ``examples`` positive cases (valid by the schema) and
``examples`` negative ones (invalid by construction), drawn with a fixed seed. The SLO headers
are not in the schema (the ingress reads them directly), so they get their own strategy.
Rules: no case gets a 5xx; a 4xx carries ``error.message``; a negative case gets a 4xx.
Schema-valid bodies have their ``max_tokens`` capped at ``MAX_TOKENS_CAP`` so a run stays
bounded in time (the huge values are the hand-written cases' job); a body without one gets the
cap too, since vLLM's default for chat is the rest of the context (thousands of tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from slidingserve.faults.client import error_message

MAX_TOKENS_CAP = 16


@dataclass
class FuzzReport:
    cases: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    max_latency_s: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def record(self, label: str, mode: str, status: int, body: bytes, latency_s: float,
               sent: Any) -> None:
        self.cases += 1
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
        self.max_latency_s = max(self.max_latency_s, latency_s)
        problem = None
        if status >= 500:
            problem = f"server error {status}"
        elif status >= 400 and status != 404 and error_message(body) is None:
            problem = f"{status} without error.message"
        elif mode == "negative" and status < 400:
            problem = f"invalid request accepted ({status})"
        if problem and len(self.failures) < 20:
            self.failures.append({"operation": label, "mode": mode, "problem": problem,
                                  "sent": repr(sent)[:300],
                                  "body": body[:300].decode(errors="replace")})

    def to_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "by_status": dict(sorted(self.by_status.items())),
                "failures": len(self.failures), "failure_examples": self.failures[:5],
                "max_latency_s": round(self.max_latency_s, 3), "skipped": self.skipped}


def _cap(body: Any) -> Any:
    """A schema-valid body bounded to ``MAX_TOKENS_CAP`` output tokens per choice."""
    if isinstance(body, dict):
        keys = ("max_tokens", "max_completion_tokens")
        for key in keys:
            if isinstance(body.get(key), int) and body[key] > MAX_TOKENS_CAP:
                body[key] = MAX_TOKENS_CAP
        if all(body.get(key) is None for key in keys):
            body["max_tokens"] = MAX_TOKENS_CAP
    return body


def fuzz_schema(url: str, auth: dict[str, str], examples: int, seed: int,
                timeout_s: float, report: FuzzReport) -> None:
    """Draw and send ``examples`` positive and negative cases per operation."""
    import schemathesis
    from schemathesis import GenerationMode

    spec = httpx.get(f"{url}/openapi.json", timeout=timeout_s).json()
    schema = schemathesis.openapi.from_dict(spec)
    client = httpx.Client(base_url=url, timeout=timeout_s)
    try:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(client, result.ok(), mode,  # type: ignore[union-attr]
                                url, auth, examples, seed, report)
    finally:
        client.close()


def _fuzz_operation(client: httpx.Client, op: Any, mode: Any, url: str, auth: dict[str, str],
                    examples: int, seed: int, report: FuzzReport) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=url, headers=auth)
        if mode == GenerationMode.POSITIVE and "json" in kwargs:
            kwargs["json"] = _cap(kwargs["json"])
        method, target = kwargs.pop("method"), kwargs.pop("url")
        t0 = time.perf_counter()
        try:
            resp = client.request(method, target, **_httpx_kwargs(kwargs))
            status, content = resp.status_code, resp.content
        except httpx.HTTPError as exc:
            status, content = 599, f"{type(exc).__name__}: {exc}".encode()
        report.record(op.label, mode.value, status, content, time.perf_counter() - t0,
                      kwargs.get("json", kwargs.get("data")))

    try:
        one()
    except Unsatisfiable:  # nothing to negate (e.g. GET /health has no inputs)
        report.skipped.append(f"{op.label} ({mode.value}): no such cases")


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis hands ``requests``-style arguments; keep what httpx understands."""
    out: dict[str, Any] = {}
    for key in ("headers", "params", "cookies", "json"):
        if kwargs.get(key) is not None:
            out[key] = kwargs[key]
    if kwargs.get("data") is not None:
        out["content"] = kwargs["data"]
    return out


def fuzz_slo_headers(url: str, auth: dict[str, str], examples: int, seed: int,
                     timeout_s: float, report: FuzzReport) -> None:
    """Random values of the SLO headers on a valid body: valid ones served, others 400."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from slidingserve.faults.bad_input import OK_BODY

    # printable ASCII without surrounding blanks: what an HTTP client can send (h11 refuses a
    # value with leading or trailing whitespace before it reaches the server)
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                          max_size=40).map(str.strip)
    names = st.sampled_from(["x-slo-tier", "x-slo-ttft-ms", "x-slo-tpot-ms"])
    client = httpx.Client(base_url=url, timeout=timeout_s)
    try:
        @hseed(seed)
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(headers=st.dictionaries(names, header_text, min_size=1, max_size=3))
        def one(headers: dict[str, str]) -> None:
            t0 = time.perf_counter()
            try:
                resp = client.post("/v1/completions", json=OK_BODY, headers={**auth, **headers})
                status, content = resp.status_code, resp.content
            except httpx.HTTPError as exc:
                status, content = 599, f"{type(exc).__name__}: {exc}".encode()
            report.record("SLO headers", "headers", status, content,
                          time.perf_counter() - t0, headers)

        one()
    finally:
        client.close()
