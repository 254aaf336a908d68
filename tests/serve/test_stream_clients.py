"""The benchmark clients time a stream's first token at its first output chunk, even when the
detokenizer has held that chunk's text back (the tiny model's byte tokens: text empty until a
character is complete). Timing the first non-empty text instead put a request's TTFT many
tokens late, about one request in a hundred. And an event's text may hold characters that
``str.splitlines`` breaks at (U+2028, U+0085): the clients split the body at newlines only."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx

from slidingserve.faults.client import _read_stream
from slidingserve.serve.bench_http import BenchConfig, is_output, one_request
from slidingserve.workload.spec import RequestSpec

GAP_S = 0.3  # between the chunk whose text is held back and the next


def _chunk(text: str, finish: str | None = None) -> bytes:
    event = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny",
             "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    # raw UTF-8, as the server writes it (JSON escapes neither U+2028 nor U+0085)
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _sse():
    yield b": admitted\n\n"
    yield _chunk("")  # token 1: its bytes are half a character
    await asyncio.sleep(GAP_S)
    yield _chunk("\u00e9")  # token 2 completes it
    yield _chunk("x\u2028\u0085y", "length")  # token 3: splitlines() breaks inside it
    usage = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny",
             "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3,
                                      "total_tokens": 7}}
    yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _transport() -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handler)


def test_is_output_counts_empty_completion_text_and_skips_the_chat_role_chunk():
    assert is_output({"index": 0, "text": ""})
    assert is_output({"index": 0, "delta": {"content": ""}})
    assert not is_output({"index": 0, "delta": {"role": "assistant", "content": ""}})


def test_bench_http_times_the_first_token_at_its_chunk():
    cfg = BenchConfig(url="http://test", rate=1.0, duration_s=1.0)
    spec = RequestSpec(key=0, arrival_s=0.0, prompt_len=4, output_len=3, tier="interactive")

    async def go():
        async with httpx.AsyncClient(transport=_transport(), base_url="http://test") as client:
            return await one_request(client, cfg, spec, time.perf_counter(), random.Random(0))

    out = asyncio.run(go())
    rec = out.record
    assert out.status == 200 and rec.finished and rec.n_out == 3
    assert rec.first_token_s - rec.arrival_s < GAP_S / 2  # not the 0.3 s later text
    assert rec.token_times is not None and len(rec.token_times) == 3  # every token timed
    assert rec.token_times[1] - rec.token_times[0] >= GAP_S * 0.9


def test_faults_client_times_the_first_token_at_its_chunk():
    async def go():
        async with httpx.AsyncClient(transport=_transport(), base_url="http://test") as client:
            t0 = time.perf_counter()
            async with client.stream("POST", "/v1/completions", json={}) as resp:
                return await _read_stream(resp, None, None, t0)

    result = asyncio.run(go())
    assert result.kind == "served"
    assert result.ttft_s is not None and result.ttft_s < GAP_S / 2
    assert result.tokens == 2  # chunks with text (the stream's visible tokens)
