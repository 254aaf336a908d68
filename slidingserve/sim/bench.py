"""Simulator speed: replay the whole Azure conversation trace at its native rate, or a fleet.

    python -m slidingserve.sim.bench [--trace PATH] [--policy NAME] [--no-fast-forward]
        [--timing oracle|noise|replay] [--noise-sigma S] [--replay PATH] [--plan-time-ms MS]
        [--replicas N] [--router NAME] [--fleet homogeneous|heterogeneous]
        [--rate-scale X] [--minutes M]

Prints the wall and CPU time of the simulation, split into the time spent inside the policy
and the simulator's own overhead (target: whole run < 10 s on one core under slidingserve).
With ``--rate-scale X`` (or ``--minutes M``) the workload is Poisson at X times the trace's
mean rate with (prompt, output) pairs drawn from the trace, for M minutes of arrivals (default
10): the trace holds one hour at its native rate, too few requests to replay it 64x faster
for 10 minutes. The fleet target: ``--replicas 64 --rate-scale 64 --minutes 10`` (slack
router) in under 2 minutes on one core.
Latency model: the default RooflineModel (Llama-3-8B-class on one H100); steps timed by it
(the oracle) unless ``--timing`` says otherwise (``slidingserve/sim/timing.py``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from slidingserve.metrics import summarize
from slidingserve.sim import SimConfig, simulate
from slidingserve.sim.timing import timing_from_options
from slidingserve.slo import load_tiers
from slidingserve.workload import WorkloadConfig, build_workload, load_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[2].parent / "shared/traces/azure_llm_2023_conv.csv"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--policy", default="slidingserve")
    ap.add_argument("--no-fast-forward", action="store_true")
    ap.add_argument("--timing", default="oracle", help="oracle | noise | replay")
    ap.add_argument("--timing-seed", type=int, default=0)
    ap.add_argument("--noise-sigma", type=float, default=None)
    ap.add_argument("--replay", type=Path, default=None)
    ap.add_argument("--plan-time-ms", default=None)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--router", default="slack")
    ap.add_argument("--fleet", default="homogeneous", help="homogeneous | heterogeneous")
    ap.add_argument("--rate-scale", type=float, default=None,
                    help="Poisson at this multiple of the trace's mean rate")
    ap.add_argument("--minutes", type=float, default=None,
                    help="minutes of arrivals (with --rate-scale; default 10)")
    args = ap.parse_args(argv)
    try:
        timing = timing_from_options(args.timing, args.timing_seed, args.noise_sigma,
                                     args.replay, args.plan_time_ms)
    except ValueError as e:
        ap.error(str(e))
    tiers = load_tiers()
    if args.rate_scale is not None or args.minutes is not None:
        scale, minutes = args.rate_scale or 1.0, args.minutes or 10.0
        trace = load_trace(args.trace) if args.trace.is_file() else None
        native = (
            (len(trace) - 1) / float(trace.arrival_s[-1])
            if trace is not None and trace.arrival_s is not None
            else 5.53
        )
        rate = native * scale
        workload = WorkloadConfig(
            trace=args.trace if trace is not None else None,
            rate=rate,
            num_requests=max(int(rate * minutes * 60), 1),
        )
        what = (
            f"Poisson at {scale:g}x {args.trace.name if trace else 'synthetic'}'s mean rate "
            f"({native:.2f} rps) = {rate:.1f} rps, {minutes:g} min of arrivals"
        )
    elif args.trace.is_file():
        workload = WorkloadConfig(trace=args.trace, arrival="replay")
        what = f"{args.trace.name} replayed at its native rate"
    else:
        workload = WorkloadConfig(rate=5.53, num_requests=19366)
        what = f"synthetic workload (no trace at {args.trace}), 19,366 requests at 5.53 rps"
    specs = build_workload(workload, tiers)
    try:
        config = SimConfig(
            fast_forward=not args.no_fast_forward,
            timing=timing,
            replicas=args.replicas,
            router=args.router,
            fleet=args.fleet,
            measure_policy_cpu=True,
        )
    except ValueError as e:
        ap.error(str(e))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = simulate(specs, tiers, args.policy, config)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    s = result.stats
    summary = summarize(result.records, tiers)
    print(f"workload: {what}: {len(specs)} requests, {result.end_s:.0f} simulated seconds")
    print(f"fleet: {args.replicas} {args.fleet} replica(s), router {args.router}")
    print(f"policy: {args.policy}; latency model: RooflineModel (Llama-3-8B-class, one H100); "
          f"timing: {s['timing']}")
    print(
        f"wall {wall:.2f} s, CPU {cpu:.2f} s (policy {s['policy_wall_s']:.2f} s wall, "
        f"simulator overhead {wall - s['policy_wall_s']:.2f} s wall)"
    )
    # CPU times do not count time the process waited for a core (a shared machine).
    print(
        f"CPU split: policy {s['policy_cpu_s']:.2f} s, "
        f"simulator overhead {cpu - s['policy_cpu_s']:.2f} s"
    )
    print(
        f"steps {s['steps']}, policy calls {s['policy_calls']} "
        f"(+{s['skipped_plans']} fixed plans not asked for), "
        f"fast-forwarded steps {s['fast_forwarded_steps']}, preemptions {s['preemptions']}"
    )
    print(
        f"attainment {summary['overall']['slo_attainment']:.4f}, "
        f"p99 TTFT {summary['overall']['ttft_s']['p99']:.3f} s"
    )


if __name__ == "__main__":
    main()
