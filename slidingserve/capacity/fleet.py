"""Fleet capacity: the policy under test behind each router, at each fleet size.

``CapacityConfig.routers`` switches ``slidingserve capacity`` from comparing policies on one
deployment to comparing routers for one policy (the first contender): per router and per
replica count in ``fleet_replicas``, the same knee search as a policy's (both criteria, every
seed, steady-state trials of ``trial.py``), on ``sim``'s fleet (homogeneous or heterogeneous,
optionally with a replica failing).

Scaling. ``capacity(1)`` is searched once (every router sends everything to the one replica;
in a heterogeneous fleet replica 0 is a fast one); it is the reference of the scaling
efficiency ``capacity(N) / (N x capacity(1))`` and, multiplied by the fleet's speed in
replicas (``fleet_speed``: N, or fast + slow / slow_factor), the first rate tried at N
replicas. The bracket then grows by ``FLEET_GROWTH`` (not ``growth``): the start is close,
so a bracket is two or three trials, not the five or six a single-replica guess needs at 4
replicas. A fixed-budget policy runs at its configured budget (no sweep).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from slidingserve.capacity.config import CapacityConfig
from slidingserve.capacity.harness import Job, JobResult, Progress, _Runner, estimate_start_rate
from slidingserve.sim.fleet import fleet_sim, fleet_speed
from slidingserve.slo import load_tiers
from slidingserve.workload import load_trace

FLEET_GROWTH = 1.15  # bracket growth from an informed start


def run_fleet_capacity(config: CapacityConfig, progress: Progress | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    tiers = load_tiers(config.tiers)
    trace = load_trace(config.trace) if config.trace is not None else None
    contender = config.contenders[0]
    counts = sorted(set(config.fleet_replicas or [config.sim.replicas]))
    main = config.sim.replicas if config.sim.replicas in counts else counts[-1]
    guess = config.start_rate or estimate_start_rate(trace)

    def job(router: str, n: int, seed: int, start: float, growth: float) -> Job:
        sim = fleet_sim(config.sim, router, n)
        cfg = config.model_copy(update={"sim": sim, "growth": growth})
        return Job("knee", contender, None, seed, cfg, tiers, trace, start=start,
                   rel_tol=config.rel_tol, both=config.criterion_90)

    with _Runner(config.workers, progress) as run:
        single = run(
            "1 replica",
            [job(config.routers[0], 1, s, guess, config.growth) for s in range(config.seeds)],
        )
        cap1 = statistics.fmean(r.capacity or 0.0 for r in single)
        big = [n for n in counts if n > 1]
        start = {n: (cap1 if cap1 > 0 else guess) * fleet_speed(config.sim, n) for n in big}
        fleet = run(
            "fleet search",
            [
                job(router, n, s, start[n], FLEET_GROWTH)
                for router in config.routers
                for n in big
                for s in range(config.seeds)
            ],
        )
    by_key: dict[tuple[str, int], list[JobResult]] = {}
    for r in fleet:
        by_key.setdefault((r.job.config.sim.router, r.job.config.sim.replicas), []).append(r)
    for router in config.routers:
        by_key[(router, 1)] = single
    routers: dict[str, Any] = {}
    for router in config.routers:
        rows = {
            str(n): _cell(by_key[(router, n)], n, cap1, fleet_speed(config.sim, n))
            for n in counts
        }
        top = rows[str(main)]
        routers[router] = {
            "capacity_rps": top["capacity_rps"],
            "capacity_rps_90": top["capacity_rps_90"],
            "capacity_per_replica": top["capacity_per_replica"],
            "scaling_efficiency": top["scaling_efficiency"],
            "replicas": main,
            "by_replicas": rows,
        }
    return {
        "policy": contender.label,
        "replicas": main,
        "replica_counts": counts,
        "fleet": config.sim.fleet,
        "slow_factor": config.sim.slow_factor if config.sim.fleet == "heterogeneous" else None,
        "fail_replica_at_s": config.sim.fail_replica_at_s,
        "arrival": {"kind": config.arrival, "cv": config.cv},
        "single_replica": _cell(single, 1, cap1, 1.0),
        "routers": routers,
        "wall_s": time.perf_counter() - t0,
        "config": config.model_dump(mode="json"),
    }


def _cell(results: list[JobResult], n: int, cap1: float, speed: float) -> dict[str, Any]:
    caps = [r.capacity or 0.0 for r in results]
    caps90 = [r.capacity_90 for r in results if r.capacity_90 is not None]
    cap = statistics.fmean(caps)
    return {
        "replicas": n,
        "capacity_rps": cap,
        "capacity_rps_90": statistics.fmean(caps90) if caps90 else None,  # None: not searched
        "per_seed": caps,
        "capacity_per_replica": cap / n,
        # capacity(N) / (N x capacity(1)); and against the fleet's speed in replicas
        "scaling_efficiency": cap / (n * cap1) if cap1 > 0 else None,
        "speed_efficiency": cap / (speed * cap1) if cap1 > 0 else None,
        "trials": sum(len(r.trials) for r in results),
        "search_wall_s": sum(r.wall_s for r in results),
        "trial_points": [
            {"seed": r.job.seed, "rate": t.rate, "worst_violation": t.worst_violation,
             "attainment": t.attainment, "growth": t.growth, "stopped_early": t.stopped_early,
             "passed_early": t.passed_early, "unsettled": t.unsettled,
             "wall_s": t.wall_s, "sim_end_s": t.stats.get("end_s")}
            for r in results
            for t in r.trials
        ],
    }
