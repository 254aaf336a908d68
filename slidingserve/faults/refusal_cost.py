"""What one refused request costs the serving machine: held at the HTTP proxy vs at the ingress.

``python -m slidingserve.faults.refusal_cost`` starts the embedded default (``deploy/local.yaml``,
2 engine and 2 ingress replicas, QoServe's tiers) twice, once with ``admission.hold_at_proxy``
off and once on. In each it makes the replicas refuse the ``batch`` tier as a whole (its share
of a replica cut to one request, two long ``batch`` streams holding it), so the tier is held
(``admission.ingress_hold_s`` set to outlast the run), then sends ``--requests`` ``batch``
requests, ``--concurrency`` at a time, each of which is refused. It prints, per setting, the
CPU time the cluster's processes used per refused request, less what they use idle over the
same wall time, and less the load generator's own (this process), with where the 429s were
answered (``x-refused-at: proxy``). A benchmark that prints numbers; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from slidingserve.faults.harness import cpu_seconds, local_app
from slidingserve.faults.runner import app_args

TIER = "batch"
KEY = "refusal-cost-key"


async def _measure(url: str, n: int, concurrency: int, idle_s: float) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {KEY}", "x-slo-tier": TIER}
    body = {"prompt": " ".join(["hello world"] * 150), "max_tokens": 4}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def hold() -> None:  # a long stream: the replica holds the tier's one request
            long = {**body, "max_tokens": 1000, "ignore_eos": True, "stream": True}
            async with client.stream("POST", "/v1/completions", headers=headers,
                                     json=long) as r:
                async for _ in r.aiter_bytes():
                    pass

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(3.0)
        closing = [await client.post("/v1/completions", headers=headers, json=body)
                   for _ in range(10)]
        for task in holders:
            task.cancel()
        await asyncio.sleep(3.0)  # the streams end; the engines go idle, the tier stays held
        _, idle0 = cpu_seconds()
        await asyncio.sleep(idle_s)
        idle_per_s = (cpu_seconds()[1] - idle0) / idle_s

        statuses: dict[int, int] = {}
        at_proxy = 0
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            nonlocal at_proxy
            async with gate:
                r = await client.post("/v1/completions", headers=headers, json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            at_proxy += r.headers.get("x-refused-at") == "proxy"

        (me0, cluster0), t0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
        me1, cluster1 = cpu_seconds()
    cluster = cluster1 - cluster0 - idle_per_s * wall
    return {"requests": n, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "refused_at_proxy": at_proxy,
            "warm_up_statuses": [r.status_code for r in closing],
            "wall_s": round(wall, 2), "cluster_idle_cores": round(idle_per_s, 3),
            "load_generator_cpu_ms_per_request": round((me1 - me0) / n * 1e3, 2),
            "cluster_cpu_ms_per_request": round(cluster / n * 1e3, 2)}


def run(base: dict[str, Any], hold_at_proxy: bool, n: int, concurrency: int,
        idle_s: float) -> dict[str, Any]:
    args = app_args(base, 2, {KEY: ["*"]}, "qoserve", ingress_replicas=2)
    args["predictor"] = {"enabled": False}
    args["admission"] = {**base.get("admission", {}), "lowest_tier_share": 0.01,
                         "ingress_hold_s": 3600.0, "hold_at_proxy": hold_at_proxy}
    with local_app(args, None, num_cpus=4) as app:
        return {"hold_at_proxy": hold_at_proxy,
                **asyncio.run(_measure(app.url, n, concurrency, idle_s))}


def main(argv: list[str] | None = None) -> None:
    from slidingserve.serve.cli import load_serve_file, repo_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle CPU measured this long")
    ap.add_argument("--config", default=None, help="serve file (default deploy/local.yaml)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    for name, value in (("--requests", a.requests), ("--concurrency", a.concurrency)):
        if value < 1:
            ap.error(f"{name} must be at least 1 (got {value})")
    if a.idle_s <= 0:
        ap.error(f"--idle-s must be positive (got {a.idle_s})")
    _, base = load_serve_file(Path(a.config) if a.config else repo_file("deploy", "local.yaml"))
    results = [run(base, at_proxy, a.requests, a.concurrency, a.idle_s)
               for at_proxy in (False, True)]
    text = json.dumps({"results": results}, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
