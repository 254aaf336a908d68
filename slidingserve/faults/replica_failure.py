"""Replica failure: SIGKILL one engine replica's process while it streams.

``streams`` long streaming requests (and ``whole`` non-streamed ones) start; once one has
received ``kill_after_tokens`` tokens, a replica is killed: the one that has admitted the most
of the queued requests below without sending them a token, then the one serving the busiest
stream (``x-served-by``).
Meanwhile a probe sends a short request every ``probe_period_s`` for ``probe_s`` seconds.
Just before the kill, ``queued`` streaming requests with long prompts arrive, so that the
victim holds requests that have not produced a token yet (``queued_lead_s`` before the kill).
Expected: streams on the killed replica that sent tokens end with an explicit error (an SSE
error event); non-streamed requests on it are sent once more to the healthy replica, tokens
produced or not (the client has seen none of them); every streaming request that had no token
at the kill is served, the ingress sending it once more to the healthy replica (a stream's
headers, sent on admission, still name the killed replica; a non-streamed response names it in
``x-retried-from``), with exactly one ``[DONE]``; requests on the
other replica finish, probes are answered by the healthy replica, Serve starts a new replica
(recovery time reported), and nothing is lost. Engine-core processes orphaned by the kill are
counted too (a leak if any).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from slidingserve.faults.client import Result, send, tally
from slidingserve.faults.harness import AppUnderTest, kill_process, orphan_engine_processes

LONG_BODY = {"prompt": list(range(20, 84)), "max_tokens": 400, "ignore_eos": True,
             "temperature": 0.0, "stream": True}
WHOLE_BODY = {**LONG_BODY, "stream": False}  # in flight, answered as a whole
SHORT_BODY = {"prompt": "ka ko ri su", "max_tokens": 4, "temperature": 0.0}
QUEUED_BODY = {"prompt": [20 + i % 60 for i in range(1500)], "max_tokens": 8, "ignore_eos": True,
               "temperature": 0.0, "stream": True}  # long prefill: not started at the kill
QUEUED_TIER = "batch"  # the loosest default tier: admission takes them on a busy replica


@dataclass(frozen=True)
class ReplicaFailureConfig:
    streams: int = 6
    whole: int = 2  # non-streamed long requests in flight too
    kill_after_tokens: int = 3
    probe_period_s: float = 0.5
    probe_s: float = 20.0
    queued: int = 8  # long-prompt streams sent just before the kill
    queued_lead_s: float = 0.3
    stream_timeout_s: float = 240.0
    recover_timeout_s: float = 300.0  # 0: no wait (no node can take a replacement replica)


def kill_replica_process(replica: str, pid: int) -> None:
    """The default failure: SIGKILL the replica's actor process."""
    kill_process(pid)


async def run_replica_failure(app: AppUnderTest, auth: dict[str, str],
                              cfg: ReplicaFailureConfig,
                              kill: Callable[[str, int], Any] = kill_replica_process
                              ) -> dict[str, Any]:
    """The scenario above; ``kill(replica, pid)`` is the failure (run on a worker thread), e.g.
    the loss of the replica's whole node."""
    replicas = app.engine_replicas()
    if len(replicas) < 2:
        raise RuntimeError(f"replica failure needs >= 2 engine replicas (have {replicas})")
    started: dict[str, int] = {}  # replica -> tokens seen on its busiest stream
    ready = asyncio.Event()
    seen: dict[int, int] = {}  # streaming request -> tokens received so far

    def on_token(n: int, replica: str | None) -> None:
        if replica is not None:
            started[replica] = max(started.get(replica, 0), n)
            if n >= cfg.kill_after_tokens:
                ready.set()

    admitted_by: dict[int, str | None] = {}  # queued stream -> replica that admitted it

    def admitted(i: int) -> Any:
        def on_start(resp_headers: httpx.Headers) -> None:
            admitted_by[i] = resp_headers.get("x-served-by")
        return on_start

    def counter(i: int) -> Any:
        def count(n: int, replica: str | None) -> None:
            seen[i] = n
            on_token(n, replica)
        return count

    headers = {**auth, "x-slo-tier": "standard"}
    async with httpx.AsyncClient(base_url=app.url, timeout=cfg.stream_timeout_s) as client:
        streams = [asyncio.create_task(send(client, "/v1/completions", LONG_BODY, headers,
                                            cfg.stream_timeout_s, stream=True,
                                            on_token=counter(i)))
                   for i in range(cfg.streams)]
        whole = [asyncio.create_task(send(client, "/v1/completions", WHOLE_BODY, headers,
                                          cfg.stream_timeout_s)) for _ in range(cfg.whole)]
        await asyncio.wait_for(ready.wait(), cfg.stream_timeout_s)
        queued_headers = {**headers, "x-slo-tier": QUEUED_TIER}
        queued = [asyncio.create_task(send(client, "/v1/completions", QUEUED_BODY, queued_headers,
                                           cfg.stream_timeout_s, stream=True,
                                           on_token=counter(cfg.streams + i),
                                           on_start=admitted(cfg.streams + i)))
                  for i in range(cfg.queued)]
        await asyncio.sleep(cfg.queued_lead_s)

        def waiting_on(replica: str) -> int:  # admitted there, no output yet
            return sum(1 for i, r in admitted_by.items() if r == replica and not seen.get(i))
        # the replica holding the most requests without a token, then the busiest stream
        victim = max(started, key=lambda r: (waiting_on(r), started[r]))
        pid = replicas[victim]
        await asyncio.to_thread(kill, victim, pid)
        killed_at = time.time()
        tokens_at_kill = dict(seen)
        probes: list[Result] = []
        while time.time() - killed_at < cfg.probe_s:
            probes.append(await send(client, "/v1/completions", SHORT_BODY, headers, 60.0))
            await asyncio.sleep(cfg.probe_period_s)
        streamed = list(await asyncio.gather(*streams, *queued))
        stream_results = streamed + list(await asyncio.gather(*whole))
    recovered = None
    if cfg.recover_timeout_s > 0:
        recovered = await asyncio.to_thread(app.wait_running, len(replicas),
                                            cfg.recover_timeout_s)
    recovery_s = None if recovered is None else round(time.time() - killed_at, 1)
    after = app.engine_replicas()
    async with httpx.AsyncClient(base_url=app.url, timeout=60.0) as client:
        post = [await send(client, "/v1/completions", SHORT_BODY, headers, 60.0)
                for _ in range(8)]
    # A stream's headers (x-served-by) come at admission, so a stream retried after the kill
    # still names the killed replica: the streams that died with it are those it had started.
    # Started: output had reached the client by the kill, or was on its way then (the stream
    # received output after the kill and then ended with the error: the ingress had sent that
    # output on before the replica died, so it could not send the request again).
    def started_on_victim(i: int, r: Result) -> bool:
        return tokens_at_kill.get(i, 0) > 0 or (r.kind == "error" and seen.get(i, 0) > 0)

    not_started = [r for i, r in enumerate(streamed) if not started_on_victim(i, r)]
    on_victim = [r for i, r in enumerate(streamed)
                 if r.replica == victim and started_on_victim(i, r)]
    on_victim += [r for r in stream_results[len(streamed):] if r.replica == victim]
    everything = stream_results + probes + post
    t = tally(everything)
    return {
        **t,
        "not_started": {**tally(not_started),
                        "retried": sum(1 for r in not_started if r.retried_from == victim),
                        "on_killed": sum(1 for r in not_started if r.replica == victim),
                        "messages": sorted({r.message for r in not_started if r.message})[:3]},
        "retried_total": sum(1 for r in everything if r.retried_from is not None),
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
