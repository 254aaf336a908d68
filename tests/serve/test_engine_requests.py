"""How a replica hands a request to its engine: the engine takes it before the replica admits
it, so that vLLM's refusal of the parameters comes first (a 400, nothing left behind), and a
request given up on is aborted in the engine. A small stand-in for ``AsyncLLM`` (its
``add_request`` / ``abort`` and vLLM's real output collector); the real engine's path is in
``test_app.py``."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.output_processor import RequestOutputCollector

from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import EngineHost
from slidingserve.serve.messages import Admitted, GenerateRequest, StreamError, TokenDelta
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers


class FakeLLM:
    """``add_request`` refuses (``refuse``), waits for ``release`` or returns a collector
    holding ``outputs``; ``abort`` records the internal ids it is given."""

    def __init__(self, refuse: Exception | None = None, outputs: Any = None,
                 release: asyncio.Event | None = None):
        self.refuse, self.outputs, self.release = refuse, outputs, release
        self.added: list[str] = []
        self.aborted: list[str] = []

    async def add_request(self, request_id: str, prompt: Any, params: Any
                          ) -> RequestOutputCollector:
        if self.release is not None:
            await self.release.wait()
        if self.refuse is not None:
            raise self.refuse
        self.added.append(request_id)
        queue = RequestOutputCollector(RequestOutputKind.DELTA, f"{request_id}-internal")
        if self.outputs is not None:
            queue.put(self.outputs)
        return queue

    async def abort(self, request_id: str, internal: bool = False) -> None:
        assert internal
        self.aborted.append(request_id)


def output(text: str, ids: list[int], finish: str | None) -> Any:
    comp = SimpleNamespace(text=text, token_ids=ids, finish_reason=finish, index=0,
                           logprobs=None, stop_reason=None)
    return SimpleNamespace(outputs=[comp], prompt_logprobs=None, finished=finish is not None)


@pytest.fixture
def host():
    tiers = load_tiers()
    h = EngineHost(load_serve_config({}), tiers, "r-test")
    h.finished = []  # type: ignore[attr-defined]
    h._finish = lambda req, slo, live, outcome: h.finished.append(outcome)  # type: ignore
    return h


def request(host: EngineHost, logprobs: int | None = None) -> GenerateRequest:
    slo = RequestSLO.of_tier(host.tiers["interactive"])
    return GenerateRequest("r1", [5, 6, 7], slo, {"max_tokens": 2, "logprobs": logprobs},
                           time.time())


async def events(host: EngineHost, req: GenerateRequest) -> list[Any]:
    return [ev async for ev in host.generate(req)]


def test_a_refusal_of_the_parameters_comes_before_the_admission_and_leaves_nothing(host):
    host._llm = FakeLLM(refuse=VLLMValidationError("Choice '[]' cannot be an empty list"))
    got = asyncio.run(events(host, request(host, logprobs=1)))
    assert len(got) == 1 and isinstance(got[0], StreamError), got
    assert got[0].status == 400 and got[0].message == "Choice '[]' cannot be an empty list"
    assert host._live == {} and host.load().queue_len == 0
    assert host.finished == []  # not a served request
    assert host._warmed_up == set()  # its logprobs path never ran


def test_an_engine_failure_on_taking_stays_an_error_after_the_admission(host):
    host._llm = FakeLLM(refuse=RuntimeError("engine core gone"))
    got = asyncio.run(events(host, request(host)))
    assert isinstance(got[0], Admitted) and isinstance(got[-1], StreamError)
    assert got[-1].status == 500 and "engine core gone" in got[-1].message
    assert host._live == {} and host.finished == ["error"]


def test_a_taken_request_streams_and_is_not_aborted(host):
    llm = FakeLLM(outputs=output("ka", [5, 6], "length"))
    host._llm = llm
    got = asyncio.run(events(host, request(host)))
    assert isinstance(got[0], Admitted) and isinstance(got[1], TokenDelta)
    assert got[1].token_ids == [5, 6] and got[1].finish_reason == "length"
    assert llm.added == ["r1"] and llm.aborted == []
    assert host._live == {} and host.finished == ["ok"]


def test_a_stream_closed_at_its_admission_is_aborted_in_the_engine(host):
    """The engine holds the request from the admission on: the ingress giving up then (the
    client gone, or another prompt of the request refused) aborts it."""
    llm = FakeLLM()  # never produces an output

    async def close_after_admission():
        gen = host.generate(request(host))
        assert isinstance(await gen.__anext__(), Admitted)
        assert set(host._live) == {"r1"}
        await gen.aclose()

    host._llm = llm
    asyncio.run(close_after_admission())
    assert llm.aborted == ["r1-internal"] and host._live == {}


def test_a_stream_cancelled_while_the_engine_takes_it_is_aborted_once_taken(host):
    async def cancel_while_taking():
        llm = FakeLLM(release=asyncio.Event())
        host._llm = llm
        task = asyncio.ensure_future(events(host, request(host)))
        await asyncio.sleep(0.01)
        assert set(host._live) == {"r1"}  # counted in the load while the engine takes it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert host._live == {}
        llm.release.set()  # the engine takes it after all: it must not run for nobody
        for _ in range(5):
            await asyncio.sleep(0)
        return llm

    llm = asyncio.run(cancel_while_taking())
    assert llm.added == ["r1"] and llm.aborted == ["r1-internal"]
