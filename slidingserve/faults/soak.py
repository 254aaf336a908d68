"""Soak: hours-like traffic in minutes, watching for leaks, drift and silent losses.

``run_soak`` offers Poisson arrivals at ``load`` x the measured capacity (the overload
scenario's burst measurement, or a fixed ``rate_rps``) for ``minutes``, with the tiers'
default mix; each request is streamed or not at random (``stream_share``). By default
(``repeat``) the arrivals are one schedule a third of the run long, played three times: the
first and last thirds, whose p99 TTFTs the stability target compares, then see the same
requests at the same offsets, so the comparison measures what the system does over time and
not which bursts the random draw put in each third. Beside the traffic, a client
opens a long stream every ``disconnect_every_s`` and leaves after its first tokens. Every
request sent gets one outcome (served, 429, explicit error, or lost: see ``faults.client``);
the client that leaves on purpose is counted apart. An ``AppWatch`` samples memory, replica
ids and KV blocks meanwhile. At the end the traffic drains, one short request per engine
replica makes each engine step once more (vLLM reports KV usage with a step, so blocks freed
by the last aborts show only then), and the KV blocks in use are read. ``soak_report`` judges
the result against the targets and draws the curve.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx

from slidingserve.faults.client import Result, send
from slidingserve.faults.harness import AppUnderTest
from slidingserve.faults.soak_watch import AppWatch
from slidingserve.serve.bench_http import is_output, sse_lines
from slidingserve.slo.tiers import TierSet
from slidingserve.workload.spec import RequestSpec

SHORT_BODY = {"prompt": "ka ko ri su", "max_tokens": 4, "temperature": 0.0}
LEAVER_BODY = {"prompt": list(range(30, 94)), "max_tokens": 256, "ignore_eos": True,
               "temperature": 0.0, "stream": True}


@dataclass(frozen=True)
class SoakConfig:
    minutes: float
    load: float = 0.8  # offered load / measured capacity
    rate_rps: float | None = None  # a fixed arrival rate instead of load x capacity
    stream_share: float = 0.5
    disconnect_every_s: float = 5.0
    leave_after_tokens: int = 2
    sample_every_s: float | None = None  # None: 1/120 of the run, within [2, 15] s
    curve_windows: int = 30  # p99 TTFT per tier over this many windows, for the curve
    tier_mix: tuple[tuple[str, float], ...] | None = None  # None: the tiers' shares
    max_prompt_tokens: int = 256
    max_output_tokens: int = 64
    capacity_burst: int = 48
    request_timeout_s: float = 240.0
    seed: int = 0
    repeat: bool = True  # one schedule of a third of the run, played three times

    def __post_init__(self) -> None:
        checks = {"minutes": self.minutes > 0, "load": self.load > 0,
                  "rate_rps": self.rate_rps is None or self.rate_rps > 0,
                  "stream_share": 0 <= self.stream_share <= 1,
                  "disconnect_every_s": self.disconnect_every_s > 0,
                  "curve_windows": self.curve_windows >= 3}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"soak: invalid {bad[0]} ({getattr(self, bad[0])!r})")

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def sample_period_s(self) -> float:
        if self.sample_every_s is not None:
            return self.sample_every_s
        return min(15.0, max(2.0, self.duration_s / 120))


@dataclass
class Sent:
    """One request of the soak and what became of it."""

    t_s: float  # arrival, seconds since the traffic started
    tier: str
    stream: bool
    kind: str  # served / rejected / error / lost
    status: int | None
    # first token: for a stream at the client, from the send; for a whole answer the ingress's
    # own measure (x-ttft-ms, from its arrival there), which the client cannot see
    ttft_s: float | None
    latency_s: float
    message: str = ""
    slot: int | None = None  # index in the schedule: with ``repeat``, the same in each play
    play: int = 0  # which play of the schedule (0, 1, 2 with ``repeat``; else 0)


@dataclass
class Leaver:
    """A stream the client left on purpose after its first tokens."""

    t_s: float
    tier: str
    tokens: int
    left: bool  # False: refused or ended before it had the tokens to leave after
    status: int | None
    message: str = ""


def body_for(spec: Any, stream: bool, rng: random.Random) -> dict[str, Any]:
    prompt = [rng.randrange(10, 500) for _ in range(spec.prompt_len)]
    return {"prompt": prompt, "max_tokens": spec.output_len, "ignore_eos": True,
            "temperature": 0.0, "stream": stream}


async def leave_mid_stream(client: httpx.AsyncClient, headers: dict[str, str], after: int,
                           t_s: float, tier: str, timeout_s: float) -> Leaver:
    """Open a long stream, read ``after`` tokens, close the connection."""
    tokens = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", "/v1/completions", json=LEAVER_BODY,
                                     headers=headers) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")[:200]
                    return Leaver(t_s, tier, 0, False, resp.status_code, text)
                async for line in sse_lines(resp.aiter_bytes()):
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if any(is_output(c) for c in event.get("choices", [])):
                        tokens += 1
                        if tokens >= after:
                            return Leaver(t_s, tier, tokens, True, 200)
        return Leaver(t_s, tier, tokens, False, 200, "stream ended before leaving")
    except (TimeoutError, httpx.HTTPError) as exc:
        return Leaver(t_s, tier, tokens, False, None, f"{type(exc).__name__}: {exc}"[:200])


@dataclass(frozen=True)
class Play:
    """One request to send: its play of the schedule, its slot there, and how to send it."""

    play: int
    slot: int
    spec: RequestSpec  # its arrival shifted to this play
    stream: bool
    seed: float  # of the prompt's tokens (different in each play)


def tier_mix(cfg: SoakConfig, tiers: TierSet) -> dict[str, float]:
    """The soak's share of each tier: ``cfg.tier_mix``, else the tiers' own shares."""
    return dict(cfg.tier_mix) if cfg.tier_mix else {t.name: t.share for t in tiers.values()}


def schedule(url: str, tiers: TierSet, cfg: SoakConfig, rate: float) -> list[Play]:
    """Every request of the soak in arrival order: with ``cfg.repeat``, one schedule of a
    third of the run (arrivals, tiers, lengths, streamed or not) played three times."""
    from slidingserve.serve.bench_http import BenchConfig, plan

    plays = 3 if cfg.repeat else 1
    bench = BenchConfig(url=url, rate=rate, duration_s=cfg.duration_s / plays,
                        tier_mix=tier_mix(cfg, tiers),
                        max_prompt_tokens=cfg.max_prompt_tokens,
                        max_output_tokens=cfg.max_output_tokens, seed=cfg.seed)
    specs = plan(bench, tiers)
    rng = random.Random(cfg.seed)
    streams = [rng.random() < cfg.stream_share for _ in specs]
    seeds = [rng.random() for _ in specs]
    # each play draws its prompts' tokens anew (same lengths): a replayed prompt could hit the
    # engine's prefix cache and make a later play cheaper than the first
    return [Play(k, slot, replace(spec, arrival_s=spec.arrival_s + k * bench.duration_s),
                 streams[slot], seeds[slot] + k)
            for k in range(plays) for slot, spec in enumerate(specs)]


async def drive(url: str, auth: dict[str, str], tiers: TierSet, cfg: SoakConfig,
                rate: float) -> tuple[list[Sent], list[Leaver], float]:
    """Open-loop traffic for ``cfg.duration_s``; returns every request and leaver, and t0."""
    played = schedule(url, tiers, cfg, rate)
    names = list(tier_mix(cfg, tiers))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits,
                                 timeout=httpx.Timeout(cfg.request_timeout_s)) as client:
        t0 = time.perf_counter()
        wall0 = time.time()

        async def one(p: Play) -> Sent:
            spec = p.spec
            await asyncio.sleep(max(0.0, t0 + spec.arrival_s - time.perf_counter()))
            body = body_for(spec, p.stream, random.Random(p.seed))
            r: Result = await send(client, "/v1/completions", body,
                                   {**auth, "x-slo-tier": spec.tier}, cfg.request_timeout_s,
                                   stream=p.stream)
            return Sent(round(spec.arrival_s, 3), spec.tier, p.stream, r.kind, r.status,
                        r.ttft_s if p.stream else r.ingress_ttft_s, round(r.latency_s, 4),
                        "" if r.kind == "served" else r.message, p.slot, p.play)

        async def leavers() -> list[Leaver]:
            tasks, i = [], 0
            while (t := time.perf_counter() - t0) < cfg.duration_s:
                tier = names[i % len(names)]
                tasks.append(asyncio.create_task(leave_mid_stream(
                    client, {**auth, "x-slo-tier": tier}, cfg.leave_after_tokens, round(t, 3),
                    tier, cfg.request_timeout_s)))
                i += 1
                await asyncio.sleep(cfg.disconnect_every_s)
            return list(await asyncio.gather(*tasks))

        sent_task = asyncio.gather(*(one(p) for p in played))
        left = await leavers()
        sent = list(await sent_task)
    return sent, left, wall0


async def step_every_engine(app: AppUnderTest, auth: dict[str, str], engines: set[str],
                            rounds: int = 10) -> dict[str, Any]:
    """Rounds of concurrent short requests until each engine replica in ``engines`` (labels
    ``Engine#id``) answered one, so each has run a step after the last abort (one at a time,
    they would all go to the replica the router ranks first on an idle app)."""
    answered: set[str] = set()
    sent: list[Result] = []
    headers = {**auth, "x-slo-tier": "standard"}
    async with httpx.AsyncClient(base_url=app.url, timeout=60.0) as client:
        for _ in range(rounds):
            if engines <= answered:
                break
            got = await asyncio.gather(*(send(client, "/v1/completions", SHORT_BODY, headers,
                                              60.0) for _ in range(3 * len(engines))))
            sent += got
            answered |= {f"Engine#{r.replica}" for r in got if r.replica}
    return {"sent": len(sent), "served": sum(1 for r in sent if r.kind == "served"),
            "lost": sum(1 for r in sent if r.kind == "lost"),
            "engines_stepped": sorted(answered & engines),
            "engines_not_reached": sorted(engines - answered)}


def run_soak(app: AppUnderTest, tiers: TierSet, cfg: SoakConfig, auth_key: str,
             progress: Any = print) -> dict[str, Any]:
    """Capacity (unless ``rate_rps``), the traffic, the drain and the final KV reading."""
    from slidingserve.faults.overload import OverloadConfig, measure_capacity
    from slidingserve.faults.soak_report import judge

    auth = {"authorization": f"Bearer {auth_key}"}
    capacity = None
    if cfg.rate_rps is None:
        cap_cfg = OverloadConfig(burst=cfg.capacity_burst,
                                 max_prompt_tokens=cfg.max_prompt_tokens,
                                 max_output_tokens=cfg.max_output_tokens,
                                 request_timeout_s=cfg.request_timeout_s, seed=cfg.seed)
        capacity = measure_capacity(app.url, tiers, cap_cfg, auth_key)
        rate = cfg.load * capacity["capacity_rps"]
        progress(f"soak: capacity {capacity['capacity_rps']:.2f} req/s -> {rate:.2f} req/s")
    else:
        rate = cfg.rate_rps
    watch = AppWatch(time.time(), cfg.sample_period_s)
    watch.sample()  # the replicas and memory before any traffic of the soak
    watch.start()
    try:
        sent, left, wall0 = asyncio.run(drive(app.url, auth, tiers, cfg, rate))
        offset = wall0 - watch.t0  # all times on the watch's clock (0: just before traffic)
        for s in sent:
            s.t_s = round(s.t_s + offset, 3)
        for x in left:
            x.t_s = round(x.t_s + offset, 3)
        engines = {a for a in watch.samples[-1]["replicas"] if a.startswith("Engine#")}
        probe = asyncio.run(step_every_engine(app, auth, engines))
        time.sleep(1.0)
    finally:
        watch.stop()
    final = watch.sample()
    progress(f"soak: {len(sent)} requests, {len(left)} left mid-stream; KV blocks in use at "
             f"the end {final['kv_blocks_used']}")
    return judge(cfg, tiers, sent, left, watch, final, probe, rate, capacity,
                 config=asdict(cfg))
