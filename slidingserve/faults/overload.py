"""Overload: open-loop traffic at a multiple of the measured capacity, for a bounded time.

1. Capacity: a burst of ``burst`` batch-tier requests (the tier admission never refuses) sent
   at once; capacity = requests finished / (last token - first arrival), the median over
   ``bursts`` bursts one after another (one short burst varied 6.8-9.5 req/s between runs of
   the same seed on the same machine, and it sets the load of every later step). Given
   ``capacity_rps``, the factors multiply it instead (the bursts still run, as warm-up).
2. Overload: for each of ``factors`` in turn, Poisson arrivals at that multiple of the capacity
   for ``duration_s`` with a tier mix (default: the tiers' own shares, 20/50/30 % for the default
   tiers; with 30 % interactive, 4x would put 1.2x capacity in the top tier alone), each request
   bounded by ``request_timeout_s`` in total. Every request must be answered (served, 429 or an
   explicit error); per tier we report admitted, refused (and why), TTFT attainment (share of
   the tier's requests admitted *and* first token within target) and TTFT p50/p99, to show the
   top tier kept on time while the lowest gives first. The resident memory of every process of the
   cluster is sampled throughout (peak reported), and the CPU both sides used (``cpu_cores``:
   average cores busy in the load generator and in the cluster over the run).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from slidingserve.faults.client import error_message
from slidingserve.faults.harness import MemorySampler, cpu_seconds
from slidingserve.metrics.records import RequestRecord
from slidingserve.slo.tiers import TierSet


@dataclass(frozen=True)
class OverloadConfig:
    factors: tuple[float, ...] = (2.0, 4.0)
    duration_s: float = 30.0
    burst: int = 48
    bursts: int = 3  # capacity: the median over this many bursts
    tier_mix: tuple[tuple[str, float], ...] | None = None  # None: the tiers' shares
    max_prompt_tokens: int = 256
    max_output_tokens: int = 64
    request_timeout_s: float = 240.0
    seed: int = 0
    # load the factors multiply instead of the measured capacity (the bursts still run, as
    # warm-up, and are reported): runs on different days, or of two configs, then offer the
    # same load
    capacity_rps: float | None = None


def _classify(outcome: Any) -> str:
    """served / rejected / error / lost for a ``bench_http.Outcome``."""
    if outcome.status is None:
        return "lost"
    if outcome.status == 200:
        if outcome.record.finished:
            return "served"
        return "error" if outcome.error else "lost"
    if outcome.status == 429:
        return "rejected"
    return "error" if error_message((outcome.error or "").encode()) else "lost"


async def _bounded_bench(bench: Any, tiers: TierSet, timeout_s: float) -> list[Any]:
    """``bench_http.run_bench`` with every request bounded by ``timeout_s`` after its arrival."""
    from slidingserve.serve.bench_http import Outcome, one_request, plan

    specs = plan(bench, tiers)
    rng = random.Random(bench.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s)) as client:
        t0 = time.perf_counter()

        async def bounded(spec: Any, seed: float) -> Any:
            try:
                return await asyncio.wait_for(
                    one_request(client, bench, spec, t0, random.Random(seed)),
                    spec.arrival_s + timeout_s)
            except TimeoutError:
                rec = RequestRecord(arrival_s=spec.arrival_s, tier=spec.tier, first_token_s=None,
                                    last_token_s=None, n_out=0, finished=False)
                return Outcome(spec, rec, None, f"no answer within {timeout_s:g}s (hung)")

        outs = await asyncio.gather(*(bounded(s, rng.random()) for s in specs))
    return sorted(outs, key=lambda o: o.spec.key)


def measure_capacity(url: str, tiers: TierSet, cfg: OverloadConfig, auth: str | None) -> dict:
    """The median capacity over ``cfg.bursts`` bursts (each reported under ``bursts``)."""
    runs = [_burst_capacity(url, tiers, cfg, auth, cfg.seed + 1 + i) for i in range(cfg.bursts)]
    median = statistics.median(r["capacity_rps"] for r in runs)
    middle = min(runs, key=lambda r: abs(r["capacity_rps"] - median))
    return {**middle, "capacity_rps": median, "bursts": runs}


def _burst_capacity(url: str, tiers: TierSet, cfg: OverloadConfig, auth: str | None,
                    seed: int) -> dict:
    from slidingserve.serve.bench_http import BenchConfig

    bench = BenchConfig(url=url, rate=cfg.burst * 10.0, duration_s=0.1,
                        tier_mix={"batch": 1.0}, max_prompt_tokens=cfg.max_prompt_tokens,
                        max_output_tokens=cfg.max_output_tokens, api_key=auth, seed=seed)
    outs = asyncio.run(_bounded_bench(bench, tiers, cfg.request_timeout_s))
    done = [o.record for o in outs if o.record.finished]
    if not done:
        raise RuntimeError(f"capacity burst: none of {len(outs)} requests finished "
                           f"({[o.error for o in outs][:3]})")
    span = max(r.last_token_s or 0.0 for r in done) - min(o.record.arrival_s for o in outs)
    return {"burst": len(outs), "finished": len(done), "span_s": round(span, 2),
            "capacity_rps": len(done) / span}


def run_overload(url: str, tiers: TierSet, cfg: OverloadConfig, auth: str | None) -> dict:
    """Capacity once, then one open-loop run per factor; totals over the runs."""
    cap = measure_capacity(url, tiers, cfg, auth)
    if cfg.capacity_rps is not None:
        cap = {**cap, "measured_rps": cap["capacity_rps"], "capacity_rps": cfg.capacity_rps}
    runs = {f"{f:g}x": _run_factor(url, tiers, cfg, auth, f, cap) for f in cfg.factors}
    total = {k: sum(r[k] for r in runs.values())
             for k in ("sent", "answered", "lost", "served", "rejected_429", "errors")}
    return {**total, "capacity": cap, "factors": list(cfg.factors), "runs": runs}


def _run_factor(url: str, tiers: TierSet, cfg: OverloadConfig, auth: str | None, factor: float,
                cap: dict) -> dict:
    from slidingserve.serve.bench_http import BenchConfig, bench_summary

    rate = factor * cap["capacity_rps"]
    mix = dict(cfg.tier_mix) if cfg.tier_mix else {t.name: t.share for t in tiers.values()}
    bench = BenchConfig(url=url, rate=rate, duration_s=cfg.duration_s,
                        tier_mix=mix, max_prompt_tokens=cfg.max_prompt_tokens,
                        max_output_tokens=cfg.max_output_tokens, api_key=auth, seed=cfg.seed,
                        timeout_s=cfg.request_timeout_s)
    mem = MemorySampler(period_s=1.0).start()
    t0, cpu0 = time.time(), cpu_seconds()
    try:
        outs = asyncio.run(_bounded_bench(bench, tiers, cfg.request_timeout_s))
    finally:
        mem.stop()
    wall, cpu1 = time.time() - t0, cpu_seconds()
    kinds = [_classify(o) for o in outs]
    summary = bench_summary(bench, tiers, [o for o in outs])
    per_tier: dict[str, Any] = {}
    for name, group in summary["tiers"].items():
        mine = [k for o, k in zip(outs, kinds, strict=True) if o.spec.tier == name]
        if not mine:
            continue
        per_tier[name] = {
            "sent": len(mine), "admitted": len(mine) - mine.count("rejected"),
            "served": mine.count("served"), "rejected_429": mine.count("rejected"),
            "errors": mine.count("error"), "lost": mine.count("lost"),
            "slo_attainment": group["slo_attainment"],
            "ttft_attainment": _ttft_attainment(outs, name, tiers),
            "ttft_p50_s": group["ttft_s"]["p50"], "ttft_p99_s": group["ttft_s"]["p99"],
            "shed_fraction": (mine.count("rejected") + mine.count("error")) / len(mine),
            "refused_why": dict(Counter(
                _refusal_kind(o) for o, k in zip(outs, kinds, strict=True)
                if k == "rejected" and o.spec.tier == name)),
        }
    lost = kinds.count("lost")
    return {
        "sent": len(outs), "answered": len(outs) - lost, "lost": lost,
        "served": kinds.count("served"), "rejected_429": kinds.count("rejected"),
        "errors": kinds.count("error"), "rate_rps": round(rate, 3), "tier_mix": mix,
        "factor": factor, "duration_s": cfg.duration_s, "wall_s": round(wall, 1),
        "tiers": per_tier, "memory": mem.report(),
        # cores busy on average over the run: the load generator, and the cluster under it
        "cpu_cores": {"client": round((cpu1[0] - cpu0[0]) / wall, 2),
                      "cluster": round((cpu1[1] - cpu0[1]) / wall, 2)},
        "lost_examples": sorted({o.error or "" for o, k in zip(outs, kinds, strict=True)
                                 if k == "lost"})[:5],
        "status_counts": summary["http"]["status_counts"],
    }


REFUSAL_KINDS = (  # message fragment -> kind (serve/engine_host.py, serve/ingress.py)
    ("behind on tier", "behind on a higher tier"),
    ("the most it takes while admitting", "tier's share of the replica full"),
    ("predicted TTFT", "predicted TTFT over target"),
)


def _refusal_kind(outcome: Any) -> str:
    """Why a 429 was refused, from its message: one of ``REFUSAL_KINDS`` or the message."""
    message = error_message((outcome.error or "").encode()) or outcome.error or ""
    for fragment, kind in REFUSAL_KINDS:
        if fragment in message:
            return kind
    return message[:80]


def _ttft_attainment(outs: list[Any], tier: str, tiers: TierSet) -> float | None:
    """Fraction of the tier's requests whose first token came within the tier's TTFT."""
    mine = [o.record for o in outs if o.spec.tier == tier]
    if not mine:
        return None
    target = tiers[tier].ttft_s
    ok = sum(1 for r in mine if r.first_token_s is not None
             and r.first_token_s - r.arrival_s <= target)
    return ok / len(mine)
