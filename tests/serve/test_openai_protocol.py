"""The OpenAI protocol as vLLM serves it, without Ray or an engine: vLLM's request models and
``SamplingParams``, defaults, error shapes, and the response / stream shapes built from a
scripted engine handle (real tokenizer of the tiny model)."""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import httpx
import pytest
from serve_helpers import sse_events
from transformers import AutoTokenizer

from slidingserve.models.tiny import ensure_tiny_model
from slidingserve.serve import openai_api as oa
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import engine_params, plain_logprobs
from slidingserve.serve.ingress import IngressService, build_api
from slidingserve.serve.messages import Admitted, GenerateRequest, TokenDelta
from slidingserve.serve.metrics import merge_expositions
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers

TIERS = load_tiers()
SLO = RequestSLO.of_tier(TIERS["standard"])
MAX_MODEL_LEN = load_serve_config({}).engine.max_model_len


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


class Stream:
    def __init__(self, events: list[Any], gate: asyncio.Event | None = None):
        self.events, self.gate = list(events), gate

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if not self.events:
            raise StopAsyncIteration
        if self.gate is not None and not isinstance(self.events[0], Admitted):
            await self.gate.wait()  # hold every token until the test opens the gate
        return self.events.pop(0)

    def cancel(self) -> None:
        pass


class Engine:
    """Each request: admitted, then per choice ``tokens`` tokens (id 100 + k, text "t{k}"),
    with logprobs (sampled token plus two alternatives) when the params ask for them."""

    def __init__(self, tokens: int = 2, gate: asyncio.Event | None = None):
        self.tokens, self.gate = tokens, gate
        self.requests: list[GenerateRequest] = []
        self.generate = self

    def options(self, **_: Any) -> Engine:
        return self

    def remote(self, req: GenerateRequest) -> Stream:
        self.requests.append(req)
        params = req.sampling
        events: list[Any] = [Admitted("r0", req.slo, None, 0.1)]
        for j in range(req.n):
            for k in range(self.tokens):
                tid = 100 + k
                lp = ([{tid: (-0.5, f"t{k}"), 7: (-1.0, "x"), 8: (-2.0, "y")}]
                      if params.logprobs is not None else None)
                prompt_lp = None
                if params.prompt_logprobs is not None and j == 0 and k == 0:
                    prompt_lp = [None] + [{t: (-3.0, None)} for t in req.prompt_token_ids[1:]]
                done = "length" if k == self.tokens - 1 else None
                events.append(TokenDelta(f"t{k}", [tid], done, req.prompt_len, k + 1, j, lp,
                                         prompt_lp))
        return Stream(events, self.gate)


def service(tokenizer, engine=None, defaults=None, scrape=None) -> IngressService:
    cfg = load_serve_config({"auth": {"keys_env": None}})
    return IngressService(cfg, TIERS, engine or Engine(), tokenizer, None, defaults, scrape)


def call(svc: IngressService, path: str, body: Any = None, method: str = "POST"
         ) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_api(svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            if method == "GET":
                return await client.get(path)
            return await client.post(path, json=body)

    return asyncio.run(go())


# ---- requests -> SamplingParams ---------------------------------------------------------
def test_sampling_fields_reach_the_engine_params(tokenizer):
    engine = Engine()
    body = {"prompt": "ka ko", "max_tokens": 3, "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "top_k": 5, "min_p": 0.1, "logit_bias": {"7": 2.0}, "seed": 3, "stop": ["ri"]}
    r = call(service(tokenizer, engine), "/v1/completions", body)
    assert r.status_code == 200, r.text
    p = engine.requests[0].sampling
    assert (p.presence_penalty, p.frequency_penalty, p.top_k, p.min_p) == (0.5, 0.25, 5, 0.1)
    assert p.logit_bias == {7: 2.0} and p.seed == 3 and p.stop == ["ri"] and p.max_tokens == 3


def test_defaults_follow_vllm(tokenizer, tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 40, "bos_token_id": 1}))
    defaults = oa.generation_defaults(str(tmp_path))
    assert defaults == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 40}
    assert oa.generation_defaults(str(tmp_path), {"generation_config": "vllm"}) == {}
    engine = Engine()
    svc = service(tokenizer, engine, defaults)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert call(svc, "/v1/chat/completions", chat).status_code == 200
    p = engine.requests[-1].sampling
    assert (p.temperature, p.top_p, p.max_tokens) == (0.6, 0.9, 40)  # the model's defaults
    call(svc, "/v1/chat/completions", {**chat, "temperature": 0.0, "max_tokens": 5})
    p = engine.requests[-1].sampling
    assert (p.temperature, p.max_tokens) == (0.0, 5)  # the request's own values win
    call(svc, "/v1/completions", {"prompt": "ka"})
    assert engine.requests[-1].sampling.max_tokens == 16  # vLLM's completions default


def test_chat_without_max_tokens_gets_the_rest_of_the_context(tokenizer):
    engine = Engine()
    r = call(service(tokenizer, engine), "/v1/chat/completions",
             {"messages": [{"role": "user", "content": "ka ko ri"}]})
    assert r.status_code == 200, r.text
    req = engine.requests[0]
    assert req.sampling.max_tokens == MAX_MODEL_LEN - req.prompt_len


def test_engine_params_carry_the_slo_and_stream_deltas():
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=4, n=2, extra_args={"slo_tier": "forged", "x": 1})
    req = GenerateRequest("r", [1, 2, 3], SLO, params, 0.0)
    assert req.n == 2 and req.prefill_tokens == 6
    again = pickle.loads(pickle.dumps(req))  # crosses Ray by pickling
    out = engine_params(again.sampling, SLO.extra_args())
    assert out.output_kind == RequestOutputKind.DELTA and out.n == 2 and out.max_tokens == 4
    assert out.extra_args == {"x": 1, **SLO.extra_args()}  # the header's SLO wins
    assert engine_params({"max_tokens": 2}, SLO.extra_args()).extra_args == SLO.extra_args()


def test_plain_logprobs():
    from vllm.logprobs import Logprob

    steps = [None, {5: Logprob(-0.1, 1, "a"), 6: Logprob(float("-inf"), 2, "b")}]
    assert plain_logprobs(steps) == [None, {5: (-0.1, "a"), 6: (float("-inf"), "b")}]
    assert plain_logprobs(None) is None


# ---- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "body", "param", "needle"), [
    ("/v1/completions", {"prompt": "ka", "temperature": "hot"}, "temperature", "'hot'"),
    ("/v1/completions", {"prompt": "ka", "max_tokens": 0}, "max_tokens", "at least 1"),
    ("/v1/completions", {"prompt": "ka", "logprobs": 30}, "logprobs", "max allowed: 20"),
    ("/v1/completions", {"prompt": "ka", "max_tokens": 4000}, "max_tokens", "max_model_len"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     "top_logprobs", "logprobs"),
    ("/v1/completions", {"prompt": "ka", "suffix": "z"}, "suffix", "suffix"),
])
def test_bad_input_has_vllms_error_shape(tokenizer, path, body, param, needle):
    r = call(service(tokenizer), path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == 400 and err["type"] == "BadRequestError" and err["param"] == param
    assert needle in err["message"], err


def test_unknown_fields_are_accepted_as_vllm_does(tokenizer):
    r = call(service(tokenizer), "/v1/completions", {"prompt": "ka", "max_tokens": 2, "zz": 1})
    assert r.status_code == 200, r.text


# ---- responses --------------------------------------------------------------------------
def test_n_batched_prompts_and_echo(tokenizer):
    engine = Engine()
    r = call(service(tokenizer, engine), "/v1/completions",
             {"prompt": ["ka", "ko ri"], "n": 2, "max_tokens": 2, "echo": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == ["kat0t1"] * 2 + ["ko rit0t1"] * 2
    assert len(engine.requests) == 2 and all(q.n == 2 for q in engine.requests)
    prompt_tokens = sum(q.prompt_len for q in engine.requests)
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 8,
                             "total_tokens": prompt_tokens + 8,
                             "prompt_tokens_details": None, "completion_tokens_details": None}


def test_echo_with_no_tokens_answers_with_the_prompt(tokenizer):
    engine = Engine(tokens=1)
    r = call(service(tokenizer, engine), "/v1/completions",
             {"prompt": "ka ko", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == "ka ko" and r.json()["usage"]["completion_tokens"] == 0
    assert engine.requests[0].sampling.max_tokens == 1  # vLLM's way: one token, not shown
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert len(choice["logprobs"]["tokens"]) == engine.requests[0].prompt_len


def test_completion_logprobs_shape(tokenizer):
    r = call(service(tokenizer), "/v1/completions", {"prompt": "ka", "max_tokens": 2,
                                                     "logprobs": 1})
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["t0", "t1"] and lp["token_logprobs"] == [-0.5, -0.5]
    assert lp["text_offset"] == [0, 2]
    assert lp["top_logprobs"][0] == {"t0": -0.5, "x": -1.0}  # sampled + top 1, as vLLM


def test_chat_logprobs_shape(tokenizer):
    r = call(service(tokenizer), "/v1/chat/completions",
             {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
              "logprobs": True, "top_logprobs": 2})
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["t0", "t1"]
    assert content[0]["logprob"] == -0.5 and content[0]["bytes"] == list(b"t0")
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["t0", "x"]


def test_stream_sends_its_role_chunk_before_the_first_token(tokenizer):
    async def go() -> tuple[list[str], list[str]]:
        gate = asyncio.Event()
        svc = service(tokenizer, Engine(gate=gate))
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], n=2,
                                     max_tokens=2, stream=True,
                                     stream_options={"include_usage": True})
        resp = await svc.complete(body, {})
        it = resp.body_iterator
        early = [await asyncio.wait_for(it.__anext__(), 5), await it.__anext__()]
        gate.set()
        return early, [c async for c in it]

    early, rest = asyncio.run(go())
    first = [json.loads(e[6:]) for e in early]
    assert [c["choices"][0]["index"] for c in first] == [0, 1]
    assert all(c["choices"][0]["delta"] == {"role": "assistant", "content": ""} for c in first)
    chunks = sse_events("".join(early + rest))
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert usage["object"] == "chat.completion.chunk" and usage["model"] == "tiny"
    assert usage["id"] == first[0]["id"] and usage["created"] == first[0]["created"]
    text = {0: "", 1: ""}
    for c in chunks[2:-1]:
        text[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content", "")
    assert text == {0: "t0t1", 1: "t0t1"}


def test_completion_stream_opens_with_a_comment(tokenizer):
    r = call(service(tokenizer), "/v1/completions",
             {"prompt": "ka", "max_tokens": 2, "stream": True, "logprobs": 0,
              "stream_options": {"include_usage": True}})
    assert r.text.startswith(": ")
    chunks = sse_events(r.text)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "t0t1"
    assert chunks[0]["choices"][0]["logprobs"]["tokens"] == ["t0"]
    assert chunks[-1]["object"] == "text_completion" and chunks[-1]["usage"]["total_tokens"] > 2


# ---- other routes -----------------------------------------------------------------------
def test_models_version_and_metrics_routes(tokenizer):
    async def scrape() -> str:
        return "# HELP a x\n# TYPE a counter\na 1\n"

    svc = service(tokenizer, scrape=scrape)
    assert call(svc, "/v1/models/tiny", method="GET").json()["id"] == "tiny"
    missing = call(svc, "/v1/models/gpt-9", method="GET")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    import vllm

    assert call(svc, "/version", method="GET").json()["version"] == vllm.__version__
    metrics = call(svc, "/metrics", method="GET")
    assert metrics.status_code == 200 and "a 1" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")


def test_merge_expositions_keeps_families_contiguous():
    node_a = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\",n=\"a\"} 1\nh_count{n=\"a\"} 1\n"
    node_b = ("# HELP g y\n# TYPE g gauge\ng{n=\"b\"} 2\n"
              "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\",n=\"b\"} 3\n")
    merged = merge_expositions([node_a, node_b]).splitlines()
    assert merged.count("# TYPE h histogram") == 1
    h = [i for i, ln in enumerate(merged) if ln.startswith("h_")]
    assert h == list(range(h[0], h[0] + 3))  # the three h samples together
    assert 'g{n="b"} 2' in merged
