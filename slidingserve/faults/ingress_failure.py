"""Ingress failure: SIGKILL one of the ingress replicas while requests pass through it.

``streams`` long streamed requests and ``whole`` long non-streamed ones start, their tiers in
turn over the tier set. Once every stream has ``kill_after_tokens`` tokens, the ingress
replica carrying the fewest streams, but at least one (``x-ingress-replica``), is killed: the
proxy balances requests in flight over the ingress replicas, so that one holds the most
non-streamed requests (whose ingress shows only in their answer). Then a probe goes out
every ``probe_period_s`` for ``probe_s``. Expected, with the proxy's ``IngressGuard``:

* streams on the killed ingress end with an explicit error (an SSE ``error`` event);
* non-streamed requests in flight on it had sent nothing yet: the proxy sends them once more
  to another ingress replica and they are served (``x-ingress-retried: 1``);
* new requests are served by the other ingress replica (or the one Serve starts anew);
* nothing is lost: every request sent gets one outcome, counted per tier.

Afterwards: the time until Serve runs as many ingress replicas as before, and the engine
requests still held by the engines once traffic stopped (the killed ingress's streams are
cancelled on the engine side when their caller dies; none may stay).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from slidingserve.faults.client import Result, send, tally
from slidingserve.faults.harness import APP_NAME, AppUnderTest, alive_actors, kill_process
from slidingserve.faults.soak_watch import app_actors, engine_stats

INGRESS_CLASS = f"ServeReplica:{APP_NAME}:Ingress"
LONG_BODY = {"prompt": list(range(20, 84)), "max_tokens": 400, "ignore_eos": True,
             "temperature": 0.0, "stream": True}
WHOLE_BODY = {**LONG_BODY, "stream": False}
SHORT_BODY = {"prompt": "ka ko ri su", "max_tokens": 4, "temperature": 0.0}


@dataclass(frozen=True)
class IngressFailureConfig:
    streams: int = 8
    whole: int = 8
    kill_after_tokens: int = 3
    probe_period_s: float = 0.25
    probe_s: float = 15.0
    request_timeout_s: float = 240.0
    recover_timeout_s: float = 180.0
    settle_timeout_s: float = 120.0  # for the engines to drop the killed ingress's requests


def ingress_replicas() -> dict[str, int]:
    """Alive ingress replicas: Serve replica id -> pid of the replica's actor process."""
    return {name.rsplit("#", 1)[-1]: pid for name, pid in alive_actors(INGRESS_CLASS).items()}


def wait_ingress(n: int, timeout_s: float) -> float | None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if len(ingress_replicas()) >= n:
            return time.time() - t0
        time.sleep(0.5)
    return None


def engine_requests_held() -> dict[str, Any]:
    return {k: s.get("queue_len", s.get("error")) for k, s in engine_stats(app_actors()).items()}


def wait_engines_idle(timeout_s: float) -> tuple[float | None, dict[str, Any]]:
    t0 = time.time()
    while True:
        held = engine_requests_held()
        if held and all(v == 0 for v in held.values()):
            return time.time() - t0, held
        if time.time() - t0 > timeout_s:
            return None, held
        time.sleep(1.0)


async def run_ingress_failure(app: AppUnderTest, auth: dict[str, str], tier_names: list[str],
                              cfg: IngressFailureConfig) -> dict[str, Any]:
    before = ingress_replicas()
    if len(before) < 2:
        raise RuntimeError(f"ingress failure needs >= 2 ingress replicas (have {before})")
    tokens: dict[int, int] = {}
    on_ingress: dict[int, str | None] = {}
    ready = asyncio.Event()

    def watch(i: int) -> tuple[Any, Any]:
        def on_token(n: int, _replica: str | None) -> None:
            tokens[i] = n
            if sum(1 for v in tokens.values() if v >= cfg.kill_after_tokens) == cfg.streams:
                ready.set()

        def on_start(headers: httpx.Headers) -> None:
            on_ingress[i] = headers.get("x-ingress-replica")
        return on_token, on_start

    def headers(tier: str) -> dict[str, str]:
        return {**auth, "x-slo-tier": tier}

    stream_tiers = [tier_names[i % len(tier_names)] for i in range(cfg.streams)]
    whole_tiers = [tier_names[i % len(tier_names)] for i in range(cfg.whole)]
    probe_tiers: list[str] = []
    async with httpx.AsyncClient(base_url=app.url, timeout=cfg.request_timeout_s) as client:
        streams = []
        for i, tier in enumerate(stream_tiers):
            on_token, on_start = watch(i)
            streams.append(asyncio.create_task(send(
                client, "/v1/completions", LONG_BODY, headers(tier), cfg.request_timeout_s,
                stream=True, on_token=on_token, on_start=on_start)))
        whole = [asyncio.create_task(send(client, "/v1/completions", WHOLE_BODY, headers(t),
                                          cfg.request_timeout_s)) for t in whole_tiers]
        await asyncio.wait_for(ready.wait(), cfg.request_timeout_s)
        counts = {r: sum(1 for v in on_ingress.values() if v == r) for r in before}
        victim = min((r for r in counts if counts[r]), key=lambda r: counts[r])
        kill_process(before[victim])
        killed_at = time.time()
        started_on_victim = {i for i, r in on_ingress.items() if r == victim}
        probes: list[Result] = []
        while time.time() - killed_at < cfg.probe_s:
            tier = tier_names[len(probes) % len(tier_names)]
            probe_tiers.append(tier)
            probes.append(await send(client, "/v1/completions", SHORT_BODY, headers(tier),
                                     60.0))
            await asyncio.sleep(cfg.probe_period_s)
        stream_results = list(await asyncio.gather(*streams))
        whole_results = list(await asyncio.gather(*whole))
    recovered = await asyncio.to_thread(wait_ingress, len(before), cfg.recover_timeout_s)
    recovery_s = None if recovered is None else round(time.time() - killed_at, 1)
    idle_after_s, held = await asyncio.to_thread(wait_engines_idle, cfg.settle_timeout_s)
    everything = stream_results + whole_results + probes
    tiers = stream_tiers + whole_tiers + probe_tiers
    on_victim = [r for i, r in enumerate(stream_results) if i in started_on_victim]
    return {
        **tally(everything),
        "by_tier": {t: tally([r for r, rt in zip(everything, tiers, strict=True) if rt == t])
                    for t in tier_names},
        "killed_ingress": victim, "ingress_before": sorted(before),
        "streams": {"on_killed": tally(on_victim),
                    "on_killed_messages": sorted({r.message for r in on_victim})[:3],
                    "elsewhere": tally([r for i, r in enumerate(stream_results)
                                        if i not in started_on_victim])},
        "whole": {**tally(whole_results),
                  "retried": sum(1 for r in whole_results if r.ingress_retried),
                  "served_by": sorted({str(r.ingress) for r in whole_results})},
        "probes": {**tally(probes),
                   "served_by_killed": sum(1 for r in probes if r.ingress == victim),
                   "retried": sum(1 for r in probes if r.ingress_retried),
                   "messages": sorted({r.message for r in probes if r.kind != "served"})[:3]},
        "retried_total": sum(1 for r in everything if r.ingress_retried),
        "recovered": recovered is not None, "recovery_s": recovery_s,
        "ingress_after": sorted(ingress_replicas()),
        "engines_idle_after_s": None if idle_after_s is None else round(idle_after_s, 1),
        "engine_requests_held": held,
    }
