"""The fault harness's own logic, without a cluster: classification, key checks, manifests."""

from __future__ import annotations

import contextlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from slidingserve.faults.bad_input import Case, check_case, hand_cases, raw_injection_cases
from slidingserve.faults.client import Result, classify_response, error_message, tally
from slidingserve.faults.fuzz import MAX_TOKENS_CAP, _cap
from slidingserve.faults.runner import FaultsConfig
from slidingserve.faults.security import check_manifests, find_key_leaks, time_key_compare
from slidingserve.serve.auth import AuthError, KeyTable
from slidingserve.slo.tiers import load_tiers

REPO = Path(__file__).resolve().parents[2]
H = httpx.Headers()


def err(msg: str) -> bytes:
    return json.dumps({"error": {"message": msg, "type": "x"}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, json.dumps({"choices": []}).encode(), "served"),
        (200, b"{}", "lost"),
        (429, err("retry later"), "rejected"),
        (429, b"", "lost"),
        (400, err("field max_tokens: bad"), "error"),
        (500, err("engine error"), "error"),
        (500, b"Internal Server Error", "lost"),
        (502, b"", "lost"),
    ],
)
def test_classify_response(status, body, kind):
    assert classify_response(status, body, H).kind == kind


def test_error_message_needs_a_non_empty_message():
    assert error_message(err("x")) == "x"
    assert error_message(err("  ")) is None
    assert error_message(b'{"detail": "Not Found"}') is None
    assert error_message(b"\xff") is None


def test_tally_counts_every_kind_and_lost_examples():
    rs = [Result("served", 200), Result("lost", None, "hung"), Result("rejected", 429),
          Result("lost", None, "hung"), Result("error", 500, "boom")]
    t = tally(rs)
    assert (t["sent"], t["answered"], t["lost"], t["served"], t["error"]) == (5, 3, 2, 1, 1)
    assert t["lost_examples"] == ["hung"]


def test_check_case_wants_status_and_message():
    case = Case("x", {"prompt": "a"})
    assert check_case(case, Result("error", 400, "bad")) is None
    assert "status 500" in (check_case(case, Result("error", 500, "bad")) or "")
    assert "no error message" in (check_case(case, Result("lost", 400, "")) or "")
    assert "no answer" in (check_case(case, Result("lost", None, "hung")) or "")
    anyfour = Case("y", expect=4)
    assert check_case(anyfour, Result("lost", 431, "")) is None


def test_hand_cases_cover_the_issue_list():
    names = " ".join(c.name for c in hand_cases(2048, 1024))
    for word in ("max_tokens huge", "negative", "longer than context", "invalid JSON",
                 "wrong type", "unknown tier", "oversized body"):
        assert word in names, word
    assert any("injection" in n for n, _ in raw_injection_cases())


def test_faults_config_names_a_bad_scenario():
    with pytest.raises(ValueError, match="unknown \\['meltdown'\\]"):
        FaultsConfig(scenarios=("overload", "meltdown"))
    with pytest.raises(ValueError, match="replicas"):
        FaultsConfig(replicas=1)


def test_key_check_compares_against_every_key_whatever_matches(monkeypatch):
    """Constant time: the number of compare_digest calls does not depend on the match."""
    keys = {f"key-{i}-abcdefgh": ["batch"] for i in range(5)}
    table = KeyTable(keys, load_tiers(None))
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in ("key-0-abcdefgh", "key-4-abcdefgh", "key-9-abcdefgh", "k"):
        calls.clear()
        with contextlib.suppress(AuthError):
            table.check(f"Bearer {presented}", "batch")
        assert len(calls) == len(keys), presented


def test_key_compare_timing_is_reported():
    timing = time_key_compare({"sk-0123456789abcdef": ["batch"]}, "sk-0123456789abcdef",
                              rounds=200, repeats=3)
    assert timing["wrong_first_byte_ns"] > 0 and timing["right_key_ns"] > 0
    assert timing["first_vs_last_ratio"] > 0


def test_key_leak_scan_finds_a_key(tmp_path):
    (tmp_path / "a.log").write_text("nothing here\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.err").write_text("auth header Bearer sk-secret-1\n")
    found = find_key_leaks(tmp_path, ["sk-secret-1", "sk-other"])
    assert found["files_with_a_key"] == ["sub/b.err"] and found["files_scanned"] == 2


def test_manifests_document_internal_ports():
    report = check_manifests(REPO)
    for rel, r in report.items():
        assert not r.get("missing"), rel
        assert r["undocumented"] == [], (rel, r)


def test_manifest_check_flags_an_undocumented_port(tmp_path):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "rayservice.yaml").write_text(
        "ports:\n  - {containerPort: 8265, name: dashboard}  # internal: never expose\n"
        "  - {containerPort: 8080, name: metrics}\n")
    (tmp_path / "ray_cluster.yaml").write_text("head: ray start --head\n")
    report = check_manifests(tmp_path)
    assert report["manifests/rayservice.yaml"]["undocumented"] == ["8080"]
    assert report["ray_cluster.yaml"]["internal_ports"] == []


def test_fuzz_cap_bounds_every_valid_body_including_those_without_max_tokens():
    """vLLM's chat default is the rest of the context: a fuzzed body without max_tokens would
    decode thousands of tokens, so it gets the cap like one with a large value."""
    chat = _cap({"messages": [{"role": "user", "content": "hi"}]})
    assert chat["max_tokens"] == MAX_TOKENS_CAP
    assert _cap({"prompt": "a", "max_tokens": 10**6})["max_tokens"] == MAX_TOKENS_CAP
    assert _cap({"prompt": "a", "max_tokens": 3})["max_tokens"] == 3
    kept = _cap({"messages": [], "max_completion_tokens": 2})
    assert kept == {"messages": [], "max_completion_tokens": 2}


@pytest.mark.parametrize("chat", [False, True])
def test_a_stream_counts_output_chunks_whose_text_is_still_empty(chat):
    """A chunk whose text is empty (the detokenizer holds partial characters back) is output
    the client received: ``on_token`` counts it, so a fault scenario does not take the stream
    for one that had not started; ``tokens`` counts the chunks with text."""
    import asyncio

    from slidingserve.faults.client import send

    def choice(text):
        return {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}

    events = [": open"]
    if chat:
        events.append("data: " + json.dumps({"choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    events += ["data: " + json.dumps({"choices": [choice("")]}),
               "data: " + json.dumps({"choices": [choice("hi")]}), "data: [DONE]"]
    body = ("\n\n".join(events) + "\n\n").encode()

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"x-served-by": "r1"})

    seen = []

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply),
                                     base_url="http://test") as client:
            return await send(client, "/v1/completions", {}, {}, 5.0, stream=True,
                              on_token=lambda n, replica: seen.append((n, replica)))

    res = asyncio.run(go())
    assert res.kind == "served" and res.tokens == 1
    assert seen == [(1, "r1"), (2, "r1")]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("SLO tier 'batch': replica is behind on tier 'interactive': a request has waited 40% "
         "of its TTFT target; retry later", "behind on a higher tier"),
        ("SLO tier 'batch': replica holds 32 requests, the most it takes while admitting tier "
         "'batch' is 32 (higher tiers keep the rest); retry later",
         "tier's share of the replica full"),
        ("SLO tier 'interactive': predicted TTFT 7.100s exceeds the target 6.000s on every "
         "replica; retry later", "predicted TTFT over target"),
        ("something else", "something else"),
    ],
)
def test_overload_names_why_a_request_was_refused(message, kind):
    from types import SimpleNamespace

    from slidingserve.faults.overload import _refusal_kind

    assert _refusal_kind(SimpleNamespace(error=err(message).decode())) == kind


def test_sse_lines_split_at_newlines_only():
    import asyncio

    from slidingserve.serve.bench_http import sse_lines

    event = json.dumps({"choices": [{"text": "a\u2028b\x1cc"}]}, ensure_ascii=False)

    async def chunks():
        body = f"data: {event}\r\n\r\ndata: [DONE]\n".encode()
        for i in range(0, len(body), 7):  # split mid-line and mid-character
            yield body[i:i + 7]

    async def collect():
        return [line async for line in sse_lines(chunks())]

    lines = asyncio.run(collect())
    assert lines == [f"data: {event}", "", "data: [DONE]"]
    assert json.loads(lines[0][6:])["choices"][0]["text"] == "a\u2028b\x1cc"


def test_cpu_seconds_counts_the_processes_under_this_one_apart_from_it():
    from slidingserve.faults.harness import cpu_seconds

    me0, kids0 = cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(5)"])
    try:
        deadline = time.time() + 30
        while cpu_seconds()[1] - kids0 < 0.25 and time.time() < deadline:
            time.sleep(0.05)
        me1, kids1 = cpu_seconds()
    finally:
        child.kill()
        child.wait()
    assert kids1 - kids0 >= 0.25  # the child's busy loop, counted while it runs
    assert me1 - me0 < kids1 - kids0  # this process mostly slept


@pytest.mark.parametrize("argv, bad", [(["--requests", "0"], "--requests"),
                                       (["--concurrency", "-1"], "--concurrency"),
                                       (["--idle-s", "0"], "--idle-s")])
def test_refusal_cost_names_a_bad_value(argv, bad, capsys):
    from slidingserve.faults.refusal_cost import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and bad in capsys.readouterr().err


def test_a_whole_answer_carries_the_ingress_measured_ttft():
    body = b'{"choices": [{"text": "x"}]}'
    got = classify_response(200, body, httpx.Headers({"x-ttft-ms": "1234.5"}))
    assert got.kind == "served" and got.ingress_ttft_s == pytest.approx(1.2345)
    for bad in ("", "nan", "-3", "soon"):
        headers = httpx.Headers({"x-ttft-ms": bad} if bad else {})
        assert classify_response(200, body, headers).ingress_ttft_s is None
