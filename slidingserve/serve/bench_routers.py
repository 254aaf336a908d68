"""The slack router against Ray Serve's default router, on the real application.

For each router in turn the same application is started locally (the same config but
``router.enabled``; ``faults.harness.local_app``), warmed up, and loaded with the same
open-loop ``bench http`` workload once per seed. ``slack`` is the SlackRouter, ``pow2`` Ray
Serve's own power-of-two-choices router. Each (router, seed) run writes its own
``summary.json``; ``routers.json`` holds them all plus one summary per router over the
requests of all its seeds (TTFT percentiles pooled), and the machine's load average.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from slidingserve.metrics.summary import summarize
from slidingserve.serve.bench_http import BenchConfig, bench_summary, run_bench
from slidingserve.slo.tiers import TierSet

ROUTERS = {"slack": True, "pow2": False}  # name -> router.enabled
WARMUP_BODY = {"prompt": list(range(20, 84)), "max_tokens": 8, "ignore_eos": True}


@dataclass(frozen=True)
class RouterBenchConfig:
    workload: BenchConfig  # its url is replaced by the local application's
    seeds: tuple[int, ...] = (0,)
    routers: tuple[str, ...] = tuple(ROUTERS)
    replicas: int = 2
    num_cpus: int = 4  # the local Ray's CPUs (replicas ask for engine_num_cpus each)
    warmup_requests: int = 8

    def __post_init__(self) -> None:
        unknown = [r for r in self.routers if r not in ROUTERS]
        if unknown or not self.routers:
            raise ValueError(f"routers: unknown {unknown or 'empty list'} "
                             f"(known: {', '.join(ROUTERS)})")
        if not self.seeds:
            raise ValueError("seeds: at least one seed")
        if self.replicas < 2:
            raise ValueError(f"replicas: routers differ only with >= 2 (got {self.replicas})")


def app_args(base: dict[str, Any], router: str, replicas: int) -> dict[str, Any]:
    """``base`` with ``replicas`` engine replicas and ``router`` (nothing else changes)."""
    return {**base, "num_replicas": replicas,
            "router": {**base.get("router", {}), "enabled": ROUTERS[router]}}


async def warm_up(url: str, n: int, headers: dict[str, str]) -> None:
    """``n`` short concurrent requests, not measured (first steps of a fresh engine are slow)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(client.post("/v1/completions", json=WARMUP_BODY, headers=headers)
                               for _ in range(n)))


def compare_routers(cfg: RouterBenchConfig, base_args: dict[str, Any], tiers: TierSet,
                    out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    from slidingserve.faults.harness import local_app

    results: dict[str, Any] = {"config": {**{k: v for k, v in cfg.__dict__.items()
                                              if k != "workload"},
                                          "workload": cfg.workload.public()},
                               "routers": {}}
    auth = {"authorization": f"Bearer {cfg.workload.api_key}"} if cfg.workload.api_key else {}
    for router in cfg.routers:
        args = app_args(base_args, router, cfg.replicas)
        progress(f"{router}: starting the app ({cfg.replicas} replicas)")
        runs: list[dict[str, Any]] = []
        records = []
        with local_app(args, num_cpus=cfg.num_cpus) as app:
            asyncio.run(warm_up(app.url, cfg.warmup_requests, auth))
            for seed in cfg.seeds:
                bench = replace(cfg.workload, url=app.url, seed=seed)
                load_before = os.getloadavg()
                t0 = time.time()
                outcomes = asyncio.run(run_bench(bench, tiers))
                summary = bench_summary(bench, tiers, outcomes)
                summary["load_average"] = {"before": load_before, "after": os.getloadavg()}
                summary["wall_s"] = round(time.time() - t0, 1)
                path = out / router / f"seed{seed}" / "summary.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(_json(summary))
                runs.append(summary)
                records += [o.record for o in outcomes]
                att = summary["overall"]["slo_attainment"]
                progress(f"{router} seed {seed}: attainment {att:.3f}, "
                         f"429 {summary['http']['rejected_429']}, wrote {path}")
        pooled = summarize(records, tiers, sum(r["duration_s"] for r in runs))
        pooled["rejected_429_by_tier"] = _sum_counts(r["http"]["rejected_429_by_tier"]
                                                     for r in runs)
        pooled["attainment_by_seed"] = [r["overall"]["slo_attainment"] for r in runs]
        results["routers"][router] = {"pooled": pooled, "runs": runs}
    (out / "routers.json").write_text(_json(results))
    return results


def rows(results: dict[str, Any]) -> list[list[str]]:
    """Table rows: router, tier, requests, 429, attainment (pooled; per seed), TTFT p50/90/99."""
    out = []
    for router, r in results["routers"].items():
        pooled = r["pooled"]
        groups = [*pooled["tiers"].items(), ("all", pooled["overall"])]
        for tier, g in groups:
            if not g["requests"]:
                continue
            per_seed = [(run["overall"] if tier == "all" else run["tiers"][tier])["slo_attainment"]
                        for run in r["runs"]]
            refused = pooled["rejected_429_by_tier"]
            n429 = sum(refused.values()) if tier == "all" else refused.get(tier, 0)
            ttft = g["ttft_s"]
            out.append([router, tier, str(g["requests"]), str(n429),
                        f"{g['slo_attainment']:.3f}",
                        " ".join(f"{a:.3f}" for a in per_seed if a is not None),
                        *(_fmt(ttft[p]) for p in ("p50", "p90", "p99"))])
    return out


COLUMNS = ("router", "tier", "requests", "429", "SLO attainment", "per seed",
           "TTFT p50 s", "TTFT p90 s", "TTFT p99 s")


def _sum_counts(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, default=str)
