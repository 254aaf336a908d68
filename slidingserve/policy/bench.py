"""Planning-speed benchmark: one policy step on a loaded replica.

``python -m slidingserve.policy.bench`` builds a seeded state with 256 running requests (mostly
decoding, some part-way through a prefill) and 256 waiting ones over the default SLO tiers, with
Azure-conversation-like lengths and a KV cache as full as they make it, and times
``policy.schedule`` on it with the roofline latency model (Llama-3-8B-class on one H100). It
prints the median, p10 and p90 planning time and writes them, with the setup, as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency import RooflineModel
from slidingserve.policy.base import make_policy
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput
from slidingserve.slo import load_tiers

BLOCK_SIZE = 16
TOTAL_BLOCKS = 27_500  # about what an 80 GB H100 leaves for the KV of an 8B model


def bench_state(n_running: int = 256, n_waiting: int = 256, seed: int = 0) -> SchedulerInput:
    """A seeded, loaded step: decodes on pace, a few partial prefills, a fresh queue."""
    rng = np.random.default_rng(seed)
    tiers = load_tiers()
    names = list(tiers)
    shares = np.array([tiers.mix()[n] for n in names])
    now = 1000.0  # after a warm-up, so that every arrival is positive
    running: list[RequestView] = []
    for key in range(n_running):
        tier = tiers[names[rng.choice(len(names), p=shares)]]
        prompt = int(rng.integers(100, 3000))
        if key % 16 == 0:  # part-way through its prefill
            computed = int(rng.integers(1, prompt))
            arrival = now - float(rng.uniform(0.1, 3.0))
            view = RequestView(
                key, tier, arrival, prompt, computed, 0, num_blocks=-(-computed // BLOCK_SIZE)
            )
        else:  # decoding on pace: next token due within (1, 3) TPOTs
            generated = int(rng.integers(1, 300))
            slack = float(rng.uniform(1.0, 3.0)) * tier.tpot_s
            first = now + slack - generated * tier.tpot_s
            arrival = first - float(rng.uniform(0.2, 3.0))
            computed = prompt + generated - 1
            view = RequestView(
                key,
                tier,
                arrival,
                prompt,
                computed,
                generated,
                num_blocks=-(-computed // BLOCK_SIZE),
                first_token_s=first,
            )
        running.append(view)
    waiting = [
        RequestView(
            10_000 + i,
            tiers[names[rng.choice(len(names), p=shares)]],
            now - float(rng.uniform(0.0, 3.0)),
            int(rng.integers(50, 4000)),
            0,
            0,
        )
        for i in range(n_waiting)
    ]
    used = sum(r.num_blocks for r in running)
    kv = KVState(
        free_blocks=max(TOTAL_BLOCKS - used, 0), total_blocks=TOTAL_BLOCKS, block_size=BLOCK_SIZE
    )
    return SchedulerInput(now, running, waiting, kv, HostLimits(max_num_seqs=512))


def run_bench(policy: str, repeats: int, seed: int) -> dict[str, Any]:
    latency = RooflineModel()
    pol = make_policy(policy, latency)
    state = bench_state(seed=seed)
    for _ in range(20):  # warm-up (imports, caches)
        plan = pol.schedule(state)
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        plan = pol.schedule(state)
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "policy": policy,
        "latency_model": "roofline (Llama-3-8B-class, one H100, defaults of RooflineConfig)",
        "running": len(state.running),
        "waiting": len(state.waiting),
        "repeats": repeats,
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "plan_requests": len(plan.scheduled),
        "plan_tokens": plan.num_tokens,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="slidingserve")
    ap.add_argument("--repeats", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("policy_bench.json"))
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1 (got {args.repeats})")
    result = run_bench(args.policy, args.repeats, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['policy']}: one step with {result['running']} running + {result['waiting']} "
        f"waiting: median {result['median_ms']:.3f} ms (p10 {result['p10_ms']:.3f}, "
        f"p90 {result['p90_ms']:.3f}) over {result['repeats']} runs; "
        f"{result['plan_requests']} requests, {result['plan_tokens']} tokens planned "
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
