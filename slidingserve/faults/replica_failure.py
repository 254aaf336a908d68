"""Replica failure: SIGKILL one engine replica's process while it streams.

``streams`` long streaming requests (and ``whole`` non-streamed ones) start; once one has
received ``kill_after_tokens`` tokens, the replica serving it (``x-served-by``) is killed.
Meanwhile a probe sends a short request every ``probe_period_s`` for ``probe_s`` seconds.
Expected: requests on the killed replica end with an explicit error (an SSE error event, or a
JSON 500 with the partial text), requests on the other replica finish, probes are answered by
the healthy replica, Serve starts a new replica (recovery time reported), and nothing is lost.
Engine-core processes orphaned by the kill are counted too (a leak if any).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from slidingserve.faults.client import Result, send, tally
from slidingserve.faults.harness import AppUnderTest, kill_process, orphan_engine_processes

LONG_BODY = {"prompt": list(range(20, 84)), "max_tokens": 400, "ignore_eos": True,
             "temperature": 0.0, "stream": True}
WHOLE_BODY = {**LONG_BODY, "stream": False}  # in flight, answered as a whole
SHORT_BODY = {"prompt": "ka ko ri su", "max_tokens": 4, "temperature": 0.0}


@dataclass(frozen=True)
class ReplicaFailureConfig:
    streams: int = 6
    whole: int = 2  # non-streamed long requests in flight too
    kill_after_tokens: int = 3
    probe_period_s: float = 0.5
    probe_s: float = 20.0
    stream_timeout_s: float = 240.0
    recover_timeout_s: float = 300.0


async def run_replica_failure(app: AppUnderTest, auth: dict[str, str],
                              cfg: ReplicaFailureConfig) -> dict[str, Any]:
    replicas = app.engine_replicas()
    if len(replicas) < 2:
        raise RuntimeError(f"replica failure needs >= 2 engine replicas (have {replicas})")
    started: dict[str, int] = {}  # replica -> tokens seen on its busiest stream
    ready = asyncio.Event()

    def on_token(n: int, replica: str | None) -> None:
        if replica is not None:
            started[replica] = max(started.get(replica, 0), n)
            if n >= cfg.kill_after_tokens:
                ready.set()

    headers = {**auth, "x-slo-tier": "standard"}
    async with httpx.AsyncClient(base_url=app.url, timeout=cfg.stream_timeout_s) as client:
        streams = [asyncio.create_task(send(client, "/v1/completions", LONG_BODY, headers,
                                            cfg.stream_timeout_s, stream=True, on_token=on_token))
                   for _ in range(cfg.streams)]
        whole = [asyncio.create_task(send(client, "/v1/completions", WHOLE_BODY, headers,
                                          cfg.stream_timeout_s)) for _ in range(cfg.whole)]
        await asyncio.wait_for(ready.wait(), cfg.stream_timeout_s)
        victim = max(started, key=lambda r: started[r])
        pid = replicas[victim]
        kill_process(pid)
        killed_at = time.time()
        probes: list[Result] = []
        while time.time() - killed_at < cfg.probe_s:
            probes.append(await send(client, "/v1/completions", SHORT_BODY, headers, 60.0))
            await asyncio.sleep(cfg.probe_period_s)
        stream_results = list(await asyncio.gather(*streams, *whole))
    recovered = await asyncio.to_thread(app.wait_running, len(replicas), cfg.recover_timeout_s)
    recovery_s = None if recovered is None else round(time.time() - killed_at, 1)
    after = app.engine_replicas()
    async with httpx.AsyncClient(base_url=app.url, timeout=60.0) as client:
        post = [await send(client, "/v1/completions", SHORT_BODY, headers, 60.0)
                for _ in range(8)]
    on_victim = [r for r in stream_results if r.replica == victim]
    everything = stream_results + probes + post
    t = tally(everything)
    return {
        **t,
        "killed_replica": victim, "killed_pid": pid,
        "streams": {"on_killed": tally(on_victim),
                    "on_killed_tokens_before_end": [r.tokens for r in on_victim],
                    "on_killed_messages": sorted({r.message for r in on_victim})[:3],
                    "elsewhere": tally([r for r in stream_results if r.replica != victim])},
        "probes": {**tally(probes), "served_by_killed": sum(1 for r in probes
                                                           if r.replica == victim),
                   "messages": sorted({r.message for r in probes if r.kind != "served"})[:3]},
        "recovered": recovered is not None, "recovery_s": recovery_s,
        "replicas_after": sorted(after), "new_replica_serves": any(
            r.replica not in replicas and r.kind == "served" for r in post),
        "after_recovery": tally(post),
        "orphan_engine_processes": orphan_engine_processes(),
    }
