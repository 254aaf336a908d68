"""The ingress retries a request once when its replica fails before the first token, and the
client gets exactly one answer; after tokens flowed a failure is an explicit error.

A fake engine handle stands in for Ray Serve (no cluster): each ``generate.remote`` call plays
the next scripted replica, whose stream raises ``ReplicaDied`` where the script says.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from fake_engine import Engine, Tokenizer
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

from slidingserve.serve.config import load_serve_config
from slidingserve.serve.ingress import MAX_ATTEMPTS, RETRIED_FROM_HEADER, IngressService
from slidingserve.serve.messages import Admitted, TokenDelta
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers

TIERS = load_tiers()
SLO = RequestSLO.of_tier(TIERS["interactive"])


class ReplicaDied(RuntimeError):
    """What Ray raises on a stream whose replica process was killed."""


def tokens(replica: str, n: int) -> list[Any]:
    out: list[Any] = [TokenDelta("", [], None, 2, 0)]  # vLLM's first output may carry no token
    out += [TokenDelta(f"<{replica}:{i}>", [10 + i], "length" if i == n - 1 else None, 2, i + 1)
            for i in range(n)]
    return out


def admitted(replica: str) -> Admitted:
    return Admitted(replica, SLO, None, 0.1)


def complete(engine: Engine, stream: bool) -> tuple[int, dict[str, str], str]:
    cfg = load_serve_config({"auth": {"keys_env": None}})
    svc = IngressService(cfg, TIERS, engine, Tokenizer())
    body = CompletionRequest(prompt="ka ko", max_tokens=3, stream=stream)
    return asyncio.run(_complete(svc, body))


async def _complete(
    svc: IngressService, body: CompletionRequest
) -> tuple[int, dict[str, str], str]:
    resp = await svc.complete(body, {"x-slo-tier": "interactive"})
    if hasattr(resp, "body_iterator"):
        text = "".join([c if isinstance(c, str) else c.decode() async for c in resp.body_iterator])
    else:
        text = resp.body.decode()
    return resp.status_code, dict(resp.headers), text


def test_replica_dying_before_the_first_token_is_retried_once_elsewhere():
    engine = Engine([admitted("a"), TokenDelta("", [], None, 2, 0), ReplicaDied("a died")],
                    [admitted("b"), *tokens("b", 3)])
    status, headers, text = complete(engine, stream=False)
    assert status == 200, text
    choice = json.loads(text)["choices"][0]
    assert choice["text"] == "<b:0><b:1><b:2>"  # one answer, from the healthy replica only
    assert headers[RETRIED_FROM_HEADER] == "a" and headers["x-served-by"] == "b"
    assert len(engine.requests) == 2 and engine.streams[0].cancelled
    # the same request (id, arrival, SLO), now naming the replica that failed it
    assert engine.requests[1].avoid == ("a",)
    assert engine.requests[0] == replace(engine.requests[1], avoid=())


def test_retried_stream_has_one_answer_and_one_done():
    """A stream's headers left at admission (before the first token), so they name the
    replica that admitted it; the retry shows in the answer coming from the other one."""
    engine = Engine([admitted("a"), ReplicaDied("a died")], [admitted("b"), *tokens("b", 3)])
    status, headers, text = complete(engine, stream=True)
    assert status == 200 and headers["x-served-by"] == "a"
    assert len(engine.requests) == 2 and engine.streams[0].cancelled
    chunks = [json.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "<b:0><b:1><b:2>"
    assert text.count("data: [DONE]") == 1 and "error" not in text


def test_a_call_that_reaches_no_replica_is_sent_again():
    engine = Engine([ReplicaDied("dead replica still listed")], [admitted("b"), *tokens("b", 1)])
    status, headers, _ = complete(engine, stream=False)
    assert status == 200 and headers[RETRIED_FROM_HEADER] == "unknown"


def test_only_one_retry_after_a_replica_failed():
    engine = Engine([admitted("a"), ReplicaDied("a died")], [admitted("b"), ReplicaDied("b too")],
                    [admitted("c"), *tokens("c", 1)])
    status, _, text = complete(engine, stream=False)
    assert status == 500 and "b too" in json.loads(text)["error"]["message"]
    assert len(engine.requests) == 2


def test_a_resend_the_dying_replica_admitted_again_is_not_the_one_retry():
    """A replica whose node is gone can still admit for a moment: the resend it took was not
    served elsewhere, so the request goes out once more (at most MAX_ATTEMPTS sends)."""
    engine = Engine([admitted("a"), ReplicaDied("a died")], [admitted("a"), ReplicaDied("gone")],
                    [admitted("b"), *tokens("b", 2)])
    status, headers, text = complete(engine, stream=False)
    assert status == 200, text
    assert json.loads(text)["choices"][0]["text"] == "<b:0><b:1>"
    assert headers[RETRIED_FROM_HEADER] == "a" and len(engine.requests) == 3
    dying = Engine(*([admitted("a"), ReplicaDied("a died")] for _ in range(MAX_ATTEMPTS)),
                   [admitted("b"), *tokens("b", 1)])
    status, _, _ = complete(dying, stream=False)
    assert status == 500 and len(dying.requests) == MAX_ATTEMPTS  # bounded


def test_a_stream_that_sent_tokens_ends_with_an_explicit_error_and_is_not_retried():
    engine = Engine([admitted("a"), *tokens("a", 3)[:2], ReplicaDied("a died")],
                    [admitted("b"), *tokens("b", 3)])
    status, _, text = complete(engine, stream=True)
    assert status == 200 and "<a:0>" in text and "a died" in text
    assert '"error"' in text and "[DONE]" not in text
    assert len(engine.requests) == 1


def test_a_whole_answer_cut_after_tokens_is_retried_once():
    """Not streamed, the client has seen none of the tokens: retried like a request with no
    token yet, and the answer holds the healthy replica's tokens only."""
    engine = Engine([admitted("a"), *tokens("a", 3)[:2], ReplicaDied("a died")],
                    [admitted("b"), *tokens("b", 3)])
    status, headers, text = complete(engine, stream=False)
    assert status == 200, text
    assert json.loads(text)["choices"][0]["text"] == "<b:0><b:1><b:2>"
    assert headers[RETRIED_FROM_HEADER] == "a" and headers["x-served-by"] == "b"
    assert len(engine.requests) == 2 and engine.requests[1].avoid == ("a",)
    # the retry fails as well: an explicit error with the partial output of the retry
    engine = Engine([admitted("a"), *tokens("a", 3)[:2], ReplicaDied("x")],
                    [admitted("b"), *tokens("b", 3)[:2], ReplicaDied("y")])
    status, _, text = complete(engine, stream=False)
    body = json.loads(text)
    assert status == 500 and body["error"]["partial"]["text"] == "<b:0>", body
    assert "y" in body["error"]["message"] and len(engine.requests) == 2


def test_no_replica_at_all_is_an_explicit_503():
    engine = Engine(*[[ReplicaDied("gone")] for _ in range(3)])
    status, _, text = complete(engine, stream=False)
    assert status == 503 and "engine unavailable" in json.loads(text)["error"]["message"]
