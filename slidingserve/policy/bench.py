"""Planning-speed benchmark: one policy step, in two settings.

``python -m slidingserve.policy.bench`` times ``policy.schedule`` on seeded states and prints,
per case, the median, p10 and p90 planning time (and writes them, with the setup, as JSON):

* ``h100-256``: 256 running requests (mostly decoding, some part-way through a prefill) and 256
  waiting ones over the default SLO tiers, with Azure-conversation-like lengths and a KV cache
  as full as they make it, planned with the roofline latency model (Llama-3-8B-class on one
  H100);
* ``cpu-engine-8``: the real CPU engine's regime: 8 running + 8 waiting requests of the tiny
  model (prompts <= 1000, 512 KV blocks, ``max_num_seqs`` 32, 512 tokens per step), planned with
  the LightGBM predictor ``predictor/data/cpu_tiny/model`` (its compiled tables), as inside
  the engine. Skipped, with a note, when that model or LightGBM is missing.
* ``cpu-engine-19``: the CPU engine at 12 req/s as captured inside its EngineCore (median): 19
  running (a third part-way through a prefill) + 60 waiting requests, 63 KV blocks of 128
  tokens, ``max_num_seqs`` 32, 512 tokens per step, ``max_model_len`` 2048, the same LightGBM
  model.

``--gap-ms G`` sleeps G ms before each timed call (default 0: back to back). The engine calls
its policy once per step (~25 ms on the CPU engine), and code that runs after such a gap runs
with cold caches and branch predictors: ``--gap-ms 25`` is the figure to compare with the
policy's cost inside the engine, back to back its best case.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency import LatencyModel, RooflineModel
from slidingserve.latency.named import SHIPPED_MODEL_DIRS
from slidingserve.policy.base import make_policy
from slidingserve.policy.types import HostLimits, KVState, RequestView, SchedulerInput
from slidingserve.slo import load_tiers

BLOCK_SIZE = 16
TOTAL_BLOCKS = 27_500  # about what an 80 GB H100 leaves for the KV of an 8B model
CPU_MODEL_DIR = SHIPPED_MODEL_DIRS["cpu-tiny"]


@dataclass(frozen=True)
class BenchCase:
    """One benchmarked setting: the state's size and lengths, the host, the latency model."""

    name: str
    running: int
    waiting: int
    prompt_range: tuple[int, int]  # running prompts; waiting ones up to ``waiting_max_prompt``
    waiting_max_prompt: int
    total_blocks: int
    limits: HostLimits
    latency: str  # "roofline" or "lightgbm-cpu-tiny"
    block_size: int = 16
    prefill_every: int = 16  # one running request in this many is part-way through its prefill
    max_generated: int = 300  # decoding running requests have generated fewer tokens


CASES = (
    BenchCase("h100-256", 256, 256, (100, 3000), 4000, TOTAL_BLOCKS,
              HostLimits(max_num_seqs=512), "roofline"),
    BenchCase("cpu-engine-8", 8, 8, (50, 1000), 1000, 512,
              HostLimits(max_num_seqs=32, max_batch_tokens=512, max_model_len=2048),
              "lightgbm-cpu-tiny"),
    BenchCase("cpu-engine-19", 19, 60, (60, 450), 1000, 63,
              HostLimits(max_num_seqs=32, max_batch_tokens=512, max_model_len=2048),
              "lightgbm-cpu-tiny", block_size=128, prefill_every=3, max_generated=100),
)


def bench_state(
    n_running: int = 256,
    n_waiting: int = 256,
    seed: int = 0,
    prompt_range: tuple[int, int] = (100, 3000),
    waiting_max_prompt: int = 4000,
    total_blocks: int = TOTAL_BLOCKS,
    limits: HostLimits | None = None,
    block_size: int = BLOCK_SIZE,
    prefill_every: int = 16,
    max_generated: int = 300,
) -> SchedulerInput:
    """A seeded, loaded step: decodes on pace, a few partial prefills, a fresh queue."""
    rng = np.random.default_rng(seed)
    tiers = load_tiers()
    names = list(tiers)
    shares = np.array([tiers.mix()[n] for n in names])
    now = 1000.0  # after a warm-up, so that every arrival is positive
    running: list[RequestView] = []
    for key in range(n_running):
        tier = tiers[names[rng.choice(len(names), p=shares)]]
        prompt = int(rng.integers(*prompt_range))
        if key % prefill_every == 0:  # part-way through its prefill
            computed = int(rng.integers(1, prompt))
            arrival = now - float(rng.uniform(0.1, 3.0))
            view = RequestView(
                key, tier, arrival, prompt, computed, 0, num_blocks=-(-computed // block_size)
            )
        else:  # decoding on pace: next token due within (1, 3) TPOTs
            generated = int(rng.integers(1, max_generated))
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
                num_blocks=-(-computed // block_size),
                first_token_s=first,
            )
        running.append(view)
    waiting = [
        RequestView(
            10_000 + i,
            tiers[names[rng.choice(len(names), p=shares)]],
            now - float(rng.uniform(0.0, 3.0)),
            int(rng.integers(50, waiting_max_prompt)),
            0,
            0,
        )
        for i in range(n_waiting)
    ]
    used = sum(r.num_blocks for r in running)
    kv = KVState(
        free_blocks=max(total_blocks - used, 0), total_blocks=total_blocks, block_size=block_size
    )
    return SchedulerInput(now, running, waiting, kv, limits or HostLimits(max_num_seqs=512))


def case_state(case: BenchCase, seed: int) -> SchedulerInput:
    return bench_state(case.running, case.waiting, seed, case.prompt_range,
                       case.waiting_max_prompt, case.total_blocks, case.limits, case.block_size,
                       case.prefill_every, case.max_generated)


def case_latency(case: BenchCase) -> tuple[LatencyModel, str]:
    """The case's latency model and its description."""
    if case.latency == "roofline":
        return RooflineModel(), "roofline (Llama-3-8B-class, one H100, defaults of RooflineConfig)"
    from predictor.model import LightGBMLatencyModel

    model = LightGBMLatencyModel.load(CPU_MODEL_DIR)
    return model, f"LightGBM mean model v{model.version} ({CPU_MODEL_DIR.name}, compiled tables)"


def run_bench(
    policy: str, repeats: int, seed: int, case: BenchCase = CASES[0], gap_ms: float = 0.0
) -> dict[str, Any]:
    """Time ``repeats`` calls of ``schedule`` on the case's state (after a warm-up), each after
    a sleep of ``gap_ms`` (0: back to back)."""
    latency, described = case_latency(case)
    pol = make_policy(policy, latency)
    state = case_state(case, seed)
    for _ in range(20):  # warm-up (imports, caches)
        plan = pol.schedule(state)
    times = np.empty(repeats)
    gap_s = gap_ms / 1e3
    for i in range(repeats):
        if gap_s > 0:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        plan = pol.schedule(state)
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "case": case.name,
        "policy": policy,
        "latency_model": described,
        "running": len(state.running),
        "waiting": len(state.waiting),
        "repeats": repeats,
        "gap_ms": gap_ms,
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
    ap.add_argument("--cases", default=",".join(c.name for c in CASES),
                    help="comma-separated case names")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="sleep this long before each timed call (0: back to back)")
    ap.add_argument("--out", type=Path, default=Path("policy_bench.json"))
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1 (got {args.repeats})")
    if args.gap_ms < 0:
        raise SystemExit(f"--gap-ms must be >= 0 (got {args.gap_ms})")
    by_name = {c.name: c for c in CASES}
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown} (known: {list(by_name)})")
    results = []
    for name in names:
        try:
            result = run_bench(args.policy, args.repeats, args.seed, by_name[name], args.gap_ms)
        except (ImportError, FileNotFoundError) as exc:
            print(f"{name}: skipped ({exc})")
            continue
        results.append(result)
        print(
            f"{name}: {result['policy']}, one step with {result['running']} running + "
            f"{result['waiting']} waiting, {result['latency_model']}: median "
            f"{result['median_ms']:.3f} ms (p10 {result['p10_ms']:.3f}, p90 "
            f"{result['p90_ms']:.3f}) over {result['repeats']} runs"
            f"{gap_note(result['gap_ms'])}; {result['plan_requests']} "
            f"requests, {result['plan_tokens']} tokens planned"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


def gap_note(gap_ms: float) -> str:
    return f" each after a {gap_ms:g} ms sleep (cold)" if gap_ms > 0 else " back to back"


if __name__ == "__main__":
    main()
