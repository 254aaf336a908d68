"""The application end to end: real Ray Serve, two CPU replicas of the tiny model, over HTTP.

One cluster for the whole module. Keys are test data passed through the app's config.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import free_port, scrape_metrics, serve_app, sse_events, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

ALL = {"Authorization": "Bearer test-key-all"}
BATCH_ONLY = {"Authorization": "Bearer test-key-batch"}
APP_ARGS = {
    "num_replicas": 2,
    "engine_num_cpus": 1,
    "auth": {"keys": {"test-key-all": ["*"], "test-key-batch": ["batch"]}, "keys_env": None},
    "router": {"stats_period_s": 0.5, "stale_after_s": 5.0},
    "engine": {"step_trace_flush_every": 4},
    "predictor": {"enabled": True, "poll_period_s": 0.5, "sample_batch": 8,
                  "retrain_every_s": None},
}


def create_small_predictor() -> None:
    """The predictor actor, made before the replicas so they find it (small sample gates)."""
    from predictor.actor import get_or_create_actor
    from predictor.service import ServiceConfig

    get_or_create_actor(ServiceConfig(min_train_samples=20, min_holdout_samples=5))


@pytest.fixture(scope="module")
def app():
    metrics_port = free_port()
    with serve_app(APP_ARGS, create_small_predictor, _metrics_export_port=metrics_port) as url:
        client = httpx.Client(base_url=url, timeout=120)
        yield client, metrics_port
        client.close()


def post(client, path, body, **headers):
    return client.post(path, json=body, headers={**ALL, **headers})


def engine_events(req) -> list:
    """Every event of ``req`` sent straight to an engine replica (past the ingress's checks)."""
    from ray import serve

    handle = serve.get_deployment_handle("Engine", app_name="slidingserve")

    async def events():
        return [ev async for ev in handle.options(stream=True).generate.remote(req)]

    return asyncio.run(events())


# ---- happy paths ------------------------------------------------------------------------
def test_completion_non_streaming_echoes_tier_and_ttft(app):
    client, _ = app
    r = post(
        client,
        "/v1/completions",
        {"prompt": "ka ko ri su", "max_tokens": 6, "ignore_eos": True},
        **{"x-slo-tier": "interactive"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert (
        body["usage"]["completion_tokens"] == 6 and body["choices"][0]["finish_reason"] == "length"
    )
    assert r.headers["x-slo-tier"] == "interactive"
    assert float(r.headers["x-ttft-ms"]) > 0


def test_chat_streaming_default_tier(app):
    client, _ = app
    body = {
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = post(client, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-slo-tier"] == "standard"  # the tier file's default
    events = sse_events(r.text)
    chunks = [e for e in events if e.get("choices")]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 5


def test_completion_streaming_and_chat_non_streaming(app):
    client, _ = app
    r = post(
        client,
        "/v1/completions",
        {"prompt": [5, 6, 7, 8], "max_tokens": 4, "ignore_eos": True, "stream": True},
        **{"x-slo-tier": "batch"},
    )
    assert r.status_code == 200 and r.headers["x-slo-tier"] == "batch"
    events = sse_events(r.text)
    assert "".join(e["choices"][0]["text"] for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    r = post(
        client,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_models_and_health(app):
    client, _ = app
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert client.get("/v1/models/tiny").json()["max_model_len"] > 0
    assert client.get("/v1/models/gpt-9").status_code == 404
    assert client.get("/version").json()["version"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["default_tier"] == "standard"


# ---- the official openai client ---------------------------------------------------------
EOS = "2"  # the tiny model's </s>: a bias of -100 keeps random weights from ending early


def openai_client(app):
    from openai import OpenAI

    client, _ = app
    return OpenAI(base_url=f"{client.base_url}/v1", api_key="test-key-all", timeout=300,
                  max_retries=0)


def test_openai_client_n_logprobs_and_echo(app):
    oc = openai_client(app)
    r = oc.completions.create(model="tiny", prompt="ka ko ri", max_tokens=4, n=2, logprobs=2,
                              echo=True, logit_bias={EOS: -100})
    assert sorted(c.index for c in r.choices) == [0, 1]
    for c in r.choices:
        assert c.text.startswith("ka ko ri") and c.finish_reason == "length"
        assert c.logprobs.token_logprobs[0] is None  # the first prompt token has none
        assert len(c.logprobs.tokens) == r.usage.prompt_tokens + 4
        assert 2 <= len(c.logprobs.top_logprobs[-1]) <= 3
    assert r.usage.completion_tokens == 8
    stream = oc.completions.create(model="tiny", prompt=["ka", "ko ri"], max_tokens=3, n=2,
                                   stream=True, stream_options={"include_usage": True},
                                   logit_bias={EOS: -100})
    chunks = list(stream)
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1, 2, 3}
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].model == "tiny"


def test_openai_client_chat_parts_logprobs_and_stream(app):
    oc = openai_client(app)
    messages = [{"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "ka ko"},
                                             {"type": "text", "text": "ri"}]}]
    r = oc.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=3,
                                   logprobs=True, top_logprobs=2, n=2, logit_bias={EOS: -100})
    assert len(r.choices) == 2 and r.choices[0].message.role == "assistant"
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and len(content[0].top_logprobs) == 2
    stream = oc.chat.completions.create(model="tiny", messages=messages, max_tokens=3, n=2,
                                        logprobs=True, top_logprobs=2, stream=True,
                                        stream_options={"include_usage": True},
                                        logit_bias={EOS: -100})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    by_choice: dict[int, list] = {0: [], 1: []}
    for c in chunks[:-1]:
        for choice in c.choices:
            by_choice[choice.index].append(choice)
    for index, parts in by_choice.items():
        assert parts[0].delta.role == "assistant", index  # each choice opens with its role
        tokens = [t for p in parts if p.logprobs for t in p.logprobs.content]
        assert len(tokens) == 3 and all(len(t.top_logprobs) == 2 for t in tokens), index
        assert "".join(p.delta.content or "" for p in parts), index
    usage = chunks[-1]
    assert usage.object == "chat.completion.chunk" and usage.model == "tiny" and usage.created
    assert usage.usage.completion_tokens == 6


def test_openai_client_chat_without_max_tokens_runs_to_the_end_of_the_context(app):
    oc = openai_client(app)
    r = oc.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ka"}],
                                   temperature=0.0, logit_bias={EOS: -100},
                                   extra_headers={"x-slo-tier": "batch"})
    assert r.choices[0].finish_reason == "length"
    max_model_len = app[0].get("/v1/models/tiny").json()["max_model_len"]
    assert r.usage.prompt_tokens + r.usage.completion_tokens == max_model_len


def test_stream_opens_with_the_role_chunk(app):
    """A chat stream's first chunk is the role alone (sent at admission, before any token;
    the gated unit test in test_openai_protocol.py shows the order); content follows."""
    client, _ = app
    body = {"messages": [{"role": "user", "content": "ka ko ri su " * 300}], "max_tokens": 2,
            "stream": True, "logit_bias": {"2": -100}}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=ALL) as r:
        assert r.status_code == 200
        data = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:])


def test_tightened_header_is_honoured(app):
    client, _ = app
    r = post(
        client,
        "/v1/completions",
        {"prompt": "ka", "max_tokens": 2},
        **{"x-slo-tier": "interactive", "x-slo-ttft-ms": "5000", "x-slo-tpot-ms": "45"},
    )
    assert r.status_code == 200 and r.headers["x-slo-tier"] == "interactive"


# ---- refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "body", "status", "needles"),
    [
        ({"x-slo-tier": "gold"}, None, 400, ["x-slo-tier", "'gold'"]),
        (
            {"x-slo-tier": "interactive", "x-slo-ttft-ms": "fast"},
            None,
            400,
            ["x-slo-ttft-ms", "'fast'"],
        ),
        (
            {"x-slo-tier": "interactive", "x-slo-ttft-ms": "60000"},
            None,
            400,
            ["x-slo-ttft-ms", "'60000'", "at most 6000 ms"],
        ),
        ({"x-slo-tier": "interactive", "x-slo-tpot-ms": "0"}, None, 400, ["x-slo-tpot-ms", "'0'"]),
        ({}, {"prompt": "ka", "max_tokens": -3}, 400, ["max_tokens", "-3"]),
        ({}, {"prompt": "ka", "temperature": "hot"}, 400, ["temperature", "'hot'"]),
        ({}, {"prompt": "ka", "max_tokens": 4000}, 400, ["max_model_len", "4000"]),
        ({}, {"prompt": [1, 99999]}, 400, ["99999", "vocabulary"]),
        ({}, {"prompt": "ka", "model": "gpt-9"}, 404, ["`gpt-9`"]),
        ({}, {"prompt": "ka", "n": 0}, 400, ["n must be at least 1"]),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(app, headers, body, status, needles):
    client, _ = app
    r = post(client, "/v1/completions", body or {"prompt": "ka", "max_tokens": 2}, **headers)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    for needle in needles:
        assert needle in message, message


def test_keys_bind_tiers(app):
    client, _ = app
    body = {"prompt": "ka", "max_tokens": 2}
    r = client.post(
        "/v1/completions", json=body, headers={**BATCH_ONLY, "x-slo-tier": "interactive"}
    )
    assert r.status_code == 403 and "interactive" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json=body, headers=BATCH_ONLY)  # default tier: standard
    assert r.status_code == 403
    r = client.post("/v1/completions", json=body, headers={**BATCH_ONLY, "x-slo-tier": "batch"})
    assert r.status_code == 200 and r.headers["x-slo-tier"] == "batch"
    r = client.post("/v1/completions", json=body, headers={"x-slo-tier": "batch"})
    assert r.status_code == 401
    r = client.post(
        "/v1/completions",
        json=body,
        headers={"Authorization": "Bearer wrong", "x-slo-tier": "batch"},
    )
    assert r.status_code == 401 and "wrong" not in r.text


def test_admission_refuses_a_target_no_replica_can_meet(app):
    client, _ = app
    r = post(
        client,
        "/v1/completions",
        {"prompt": "ka ko", "max_tokens": 2},
        **{"x-slo-tier": "interactive", "x-slo-ttft-ms": "0.5"},
    )
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert "predicted TTFT" in r.json()["error"]["message"]


# ---- router -----------------------------------------------------------------------------
def test_router_spreads_concurrent_load(app):
    client, _ = app
    time.sleep(1.5)  # let both replicas report routing stats

    def one(i: int) -> str:
        r = post(
            client,
            "/v1/completions",
            {"prompt": "ka ko ri " * 40, "max_tokens": 8, "ignore_eos": True},
            **{"x-slo-tier": "interactive"},
        )
        assert r.status_code == 200, r.text
        return r.headers["x-served-by"]

    # The router ranks by predicted TTFT with each replica's learned TTFT scale, which earlier
    # tests in this module moved: a replica predicted much faster may rightly take a whole
    # burst. Routed requests count against a replica until its next stats report, so a later
    # burst spreads; a router that never spreads fails all three.
    bursts = []
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            bursts.append(list(pool.map(one, range(8))))
        if len(set(bursts[-1])) == 2:
            break
        time.sleep(1.0)  # fresh stats from both replicas
    assert len(set(bursts[-1])) == 2, bursts


def test_router_prefers_the_replica_with_more_slack(app):
    """The real SlackRouter over the live replicas, with constructed routing stats."""
    import ray
    from ray.serve._private.common import (
        DeploymentHandleSource,
        DeploymentID,
        ReplicaID,
        RequestMetadata,
        RunningReplicaInfo,
    )
    from ray.serve.request_router import PendingRequest, RunningReplica

    from slidingserve.serve.load import ReplicaLoad
    from slidingserve.serve.messages import GenerateRequest
    from slidingserve.serve.router import SlackRouter
    from slidingserve.serve.slo_headers import RequestSLO
    from slidingserve.slo.tiers import load_tiers

    dep = DeploymentID(name="Engine", app_name="slidingserve")
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if re.match(r"SERVE_REPLICA::slidingserve#Engine#", a["name"])
    ]
    assert len(names) == 2, names

    def replica(name: str, stats: dict) -> RunningReplica:
        rid = ReplicaID(unique_id=name.rsplit("#", 1)[1], deployment_id=dep)
        info = RunningReplicaInfo(rid, None, None, None, name, 64, routing_stats=stats)
        return RunningReplica(info)

    def stats(name: str, waiting: dict[int, int], age_s: float = 0.0) -> dict:
        return ReplicaLoad(
            ts=time.time() - age_s,
            replica=name,
            queue_len=sum(waiting.values()) // 100,
            running=0,
            waiting_tokens=waiting,
            s_per_prefill_token=1e-3,
            step_s=0.02,
        ).to_stats()

    interactive = RequestSLO.of_tier(load_tiers()["interactive"])
    req = GenerateRequest("r", [1] * 50, interactive, {"max_tokens": 1}, time.time())

    async def choose(a_stats: dict, b_stats: dict, times: int = 1):
        router = SlackRouter(deployment_id=dep, handle_source=DeploymentHandleSource.UNKNOWN)
        router.initialize_state(stale_after_s=3.0, seed=0)
        a, b = replica(names[0], a_stats), replica(names[1], b_stats)
        out = []
        for i in range(times):
            meta = RequestMetadata(request_id=f"x{i}", internal_request_id=f"x{i}")
            pending = PendingRequest(args=[req], kwargs={}, metadata=meta)
            ranks = await router.choose_replicas([a, b], pending)
            out.append([[r.replica_id.unique_id for r in rank] for rank in ranks])
        return (out[0] if times == 1 else out), a, b

    # a holds 4000 interactive prefill tokens (4 s at 1 ms/token), b only batch work.
    ranks, a, b = asyncio.run(choose(stats(names[0], {0: 4000}), stats(names[1], {2: 9000})))
    assert ranks == [[b.replica_id.unique_id], [a.replica_id.unique_id]]
    # reversed backlog, reversed choice
    ranks, a, b = asyncio.run(choose(stats(names[0], {2: 9000}), stats(names[1], {0: 4000})))
    assert ranks == [[a.replica_id.unique_id], [b.replica_id.unique_id]]
    # equal stats: what it has just sent counts until the next snapshot, so a burst alternates
    picks, _, _ = asyncio.run(choose(stats(names[0], {}), stats(names[1], {}), times=4))
    firsts = [p[0][0] for p in picks]
    assert firsts[0] != firsts[1] and firsts[0] == firsts[2] and firsts[1] == firsts[3]
    # stale stats: power of two choices (one rank holding both candidates)
    ranks, _, _ = asyncio.run(choose(stats(names[0], {0: 4000}, age_s=60), stats(names[1], {})))
    assert len(ranks) == 1 and sorted(ranks[0]) == sorted(n.rsplit("#", 1)[1] for n in names)


# ---- predictor and metrics --------------------------------------------------------------
def test_new_predictor_version_reaches_both_replicas(app):
    import ray

    from predictor.actor import ACTOR_NAME, NAMESPACE

    client, metrics_port = app
    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)

    def traffic_and_samples():
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: post(client, "/v1/completions",
                                         {"prompt": "ka ko " * 30, "max_tokens": 12,
                                          "ignore_eos": True}), range(8)))
        stats = ray.get(actor.stats.remote())
        return stats if stats["train_samples"] >= 20 and stats["holdout_samples"] >= 5 else None

    wait_for(traffic_and_samples, 120, "replicas to stream step samples to the predictor")
    result = ray.get(actor.retrain.remote())
    assert result.published, result
    version = result.version

    def replicas_on_version():
        text = scrape_metrics(metrics_port)
        found = re.findall(
            r'^ray_slidingserve_predictor_model_version\{[^}]*replica="([^"]+)"[^}]*\} (\S+)',
            text, re.M)
        on = {r for r, v in found if float(v) == version}
        return on if len(on) == 2 else None

    replicas = wait_for(replicas_on_version, 90, f"both replicas to report model v{version}")

    # the engines swapped too: their own step traces record the new latency-model version
    from predictor.steptrace import read_steptrace
    from slidingserve.models.tiny import default_data_dir

    def engines_on_version():
        post(client, "/v1/completions", {"prompt": "ka", "max_tokens": 8, "ignore_eos": True})
        post(client, "/v1/completions", {"prompt": "ko", "max_tokens": 8, "ignore_eos": True})
        seen = {}
        for r in replicas:
            path = default_data_dir() / "serve" / r / "steps.parquet"
            if path.exists():
                seen[r] = read_steptrace(path).extra["latency_version"][-1]
        ok = all(v == f"lgbm-v{version}" for v in seen.values()) and len(seen) == 2
        return seen if ok else None

    wait_for(engines_on_version, 90, f"both engines to run on lgbm-v{version}")


def test_serving_port_exports_the_metrics(app):
    client, _ = app

    def series():
        text = client.get("/metrics").text
        return text if "ray_slidingserve_requests_total" in text else None

    text = wait_for(series, 60, "slidingserve series on the serving port's /metrics")
    assert "# TYPE ray_slidingserve_ttft_seconds histogram" in text


def test_metrics_endpoint_has_tier_tagged_series(app):
    _, metrics_port = app

    def series():
        text = scrape_metrics(metrics_port)
        need = [
            r'ray_slidingserve_ttft_seconds_bucket\{[^}]*tier="interactive"',
            r'ray_slidingserve_requests_total\{[^}]*outcome="ok"[^}]*tier="batch"'
            r'|ray_slidingserve_requests_total\{[^}]*tier="batch"[^}]*outcome="ok"',
            r'ray_slidingserve_rejected_total\{[^}]*status="429"',
            r'ray_slidingserve_slo_attained_total\{[^}]*tier="standard"',
            r"ray_slidingserve_chunk_tokens_bucket",
            r"ray_slidingserve_predictor_ratio_bucket",
        ]
        missing = [p for p in need if not re.search(p, text)]
        return text if not missing else None

    wait_for(series, 60, "tier-tagged slidingserve series on the metrics endpoint")


def test_engine_replicas_export_vllm_engine_stats(app):
    """vLLM's SchedulerStats/IterationStats reach Ray metrics from both engine replicas."""
    client, metrics_port = app

    def value(text: str, name: str, replica: str, extra: str = "") -> float:
        pat = rf'^ray_{name}\{{([^}}]*)\}} (\S+)$'
        for labels, v in re.findall(pat, text, re.M):
            if f'replica="{replica}"' in labels and extra in labels:
                return float(v)
        return -1.0

    def both_replicas():
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: post(client, "/v1/completions",
                                         {"prompt": "ka ko " * 20, "max_tokens": 8,
                                          "ignore_eos": True}), range(4)))
        text = scrape_metrics(metrics_port)
        replicas = set(re.findall(
            r'^ray_slidingserve_engine_kv_cache_usage\{[^}]*replica="([^"]+)"', text, re.M))
        if len(replicas) < 2:
            return None
        for r in replicas:
            gauges = [value(text, f"slidingserve_engine_{g}", r)
                      for g in ("kv_cache_usage", "running_requests", "waiting_requests")]
            if min(gauges) < 0:
                return None
            assert 0.0 <= gauges[0] <= 1.0, gauges
            if value(text, "slidingserve_engine_generation_tokens_total", r) <= 0:
                return None
            if value(text, "slidingserve_engine_prompt_tokens_total", r, 'source="computed"') <= 0:
                return None
        return replicas

    wait_for(both_replicas, 90, "vLLM engine stats from both replicas")


def test_bench_http_writes_the_shared_summary(app, tmp_path):
    from typer.testing import CliRunner

    from slidingserve.serve.cli import serve_cli

    client, _ = app
    out = tmp_path / "bench"
    result = CliRunner().invoke(serve_cli, [
        "bench", "http", "--url", str(client.base_url), "--rate", "2", "--duration", "3",
        "--tier-mix", "interactive=0.5,batch=0.5", "--max-prompt-tokens", "64",
        "--max-output-tokens", "6", "--out", str(out)], env={"SLIDINGSERVE_KEY": "test-key-all"})
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "slidingserve.summary/v1"
    n = summary["num_requests"]
    assert n >= 3 and summary["overall"]["finished"] == n
    assert summary["tiers"]["standard"]["requests"] == 0
    assert summary["tiers"]["interactive"]["requests"] + summary["tiers"]["batch"]["requests"] == n
    assert summary["overall"]["ttft_s"]["p50"] > 0 and summary["http"]["rejected_429"] == 0
    assert summary["http"]["config"]["api_key"] == "<set>"


def test_a_request_the_engine_refuses_ends_with_an_explicit_error(app):
    """Past the ingress's checks (a direct handle call), the scheduler refuses a bad SLO; the
    stream must end with a StreamError naming why, not a silent or 'successful' end."""
    from slidingserve.serve.messages import Admitted, GenerateRequest, StreamError
    from slidingserve.serve.slo_headers import RequestSLO

    bad = RequestSLO("interactive", ttft_s=6.0, tpot_s=-0.05, e2e_s=None, priority=0)
    got = engine_events(GenerateRequest("direct-bad-slo", [5, 6, 7], bad, {"max_tokens": 4},
                                        time.time()))
    assert isinstance(got[0], Admitted)
    assert isinstance(got[-1], StreamError) and "error" in got[-1].message, got


def test_parameters_the_engine_refuses_are_a_400_before_any_stream(app):
    """vLLM's input processor checks structured outputs only when the engine takes the request
    (an empty choice list passes the ingress's own checks). Streaming or not, the client gets
    vLLM's plain 400 with its message, never a stream's 200 followed by an error event; the
    replicas hold nothing of it and serve on."""
    from ray import serve
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from slidingserve.serve.messages import GenerateRequest, StreamError
    from slidingserve.serve.slo_headers import RequestSLO

    client, _ = app
    bad = {"prompt": "ka", "max_tokens": 2, "structured_outputs": {"choice": []}}
    for stream in (True, False):
        r = post(client, "/v1/completions", {**bad, "stream": stream})
        assert r.status_code == 400, (stream, r.text)
        assert r.headers["content-type"].startswith("application/json"), r.headers
        err = r.json()["error"]
        assert err["code"] == 400 and err["type"] == "BadRequestError", err
        assert "cannot be an empty list" in err["message"], err
    r = post(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 2, "stream": True,
                                              "structured_outputs": {"choice": []}})
    assert r.status_code == 400 and "cannot be an empty list" in r.json()["error"]["message"]

    slo = RequestSLO("interactive", ttft_s=6.0, tpot_s=0.05, e2e_s=None, priority=0)
    params = SamplingParams(max_tokens=2, structured_outputs=StructuredOutputsParams(choice=[]))
    got = engine_events(GenerateRequest("direct-bad-choice", [5, 6, 7], slo, params, time.time()))
    assert len(got) == 1 and isinstance(got[0], StreamError) and got[0].status == 400, got

    r = post(client, "/v1/completions", {"prompt": "ka", "max_tokens": 3, "ignore_eos": True,
                                         "stream": True})
    assert r.status_code == 200, r.text
    chunks = [e for e in sse_events(r.text) if e.get("choices")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    handle = serve.get_deployment_handle("Engine", app_name="slidingserve")

    async def loads():
        return [await handle.replica_info.remote() for _ in range(6)]

    for info in asyncio.run(loads()):  # nothing of the refused requests is left held
        assert info["load"]["queue_len"] == 0, info
