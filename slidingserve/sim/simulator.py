"""The discrete-event loop: arrivals and step completions on N replicas behind a router.

Events are step ends, kept in a heap of (time, seq, replica); arrivals come from the sorted
workload and are merged in (an arrival at the same time as a step end is handled first, so the
next step sees it). Steps last what ``SimConfig.timing`` says (``slidingserve/sim/timing.py``;
default: the policy's own latency model, the oracle); ``stats["timing"]`` labels it.
Deterministic: the workload carries its seed, noisy or replayed timing its own (per replica
and step number), ties are broken by insertion order. At the end, conservation is asserted
(``ConservationError``): every request finished exactly once with all its output tokens, and
every token run is accounted for (prompt + output - 1 tokens per finished request, plus the
recompute after preemptions).

Fleets and failure. Replica i plans and is timed with its own latency model
(``slidingserve/sim/fleet.py``: a heterogeneous fleet's slow half runs a scaled copy). With
``SimConfig.fail_replica_at_s``, replica ``fail_replica`` dies at that time (an event handled
before arrivals and step ends at the same time): its step in flight never ends, it is routed
nothing more, its requests without a computed token are routed again (in key order, by the
same router, over the live replicas) and the ones that started are lost: never finished, so
violations (not re-run elsewhere: their client saw the stream break). Conservation then
asks every request to finish or be lost, and tokens run by the dead replica stay counted.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slidingserve.engine.latency_source import LiveLatencyModel
from slidingserve.latency import LatencyModel, RooflineModel, StepOverhead
from slidingserve.metrics import RequestRecord
from slidingserve.policy import Policy, RequestView, make_policy
from slidingserve.sim.config import SimConfig, TimingConfig
from slidingserve.sim.fastforward import fixed_decode_items, is_decode_only_plan, start_decode_run
from slidingserve.sim.fleet import fleet_latencies
from slidingserve.sim.monitor import RunMonitor
from slidingserve.sim.replica import Replica
from slidingserve.sim.request import SimRequest
from slidingserve.sim.routers import make_router
from slidingserve.sim.timing import make_timing, resolve_timing
from slidingserve.slo import TierSet
from slidingserve.workload import RequestSpec


class ConservationError(AssertionError):
    """The simulation lost or duplicated a request or a token (a simulator bug)."""


class SimulationStalled(RuntimeError):
    """Requests are pending but the policy schedules nothing and no arrival is left."""


@dataclass
class SimResult:
    records: list[RequestRecord]
    end_s: float  # simulated time of the last event handled
    stats: dict[str, Any] = field(default_factory=dict)


def simulate(
    specs: Sequence[RequestSpec],
    tiers: TierSet,
    policy: str | Callable[[LatencyModel], Policy],
    config: SimConfig | None = None,
    latency: LatencyModel | None = None,
    policy_config: dict[str, Any] | None = None,
    monitor: RunMonitor | None = None,
    monitor_every_s: float = 5.0,
) -> SimResult:
    """Simulate ``specs`` (sorted by arrival) under ``policy`` (a registered name or a factory).

    With a ``monitor`` (asked every ``monitor_every_s`` simulated seconds), the run stops as
    soon as it says so: ``stats["stopped_early"]``.
    """
    config = config or SimConfig()
    latency = latency or RooflineModel()
    factory = _policy_factory(policy, policy_config)
    timing = resolve_timing(config.timing)
    latencies = fleet_latencies(config, latency)
    # what each replica's policy plans with: the model as given, or a copy corrected online
    correctors = [_corrector(lat, timing.planner_correction) for lat in latencies]
    planners = [_planning_policy(factory, c or lat, timing)
                for c, lat in zip(correctors, latencies, strict=True)]
    policies = [pol for pol, _ in planners]
    replicas = [
        Replica(
            i,
            pol,
            lat,
            config.kv_blocks(),
            config.block_size,
            config.limits(),
            config.record_token_times,
            make_timing(timing, lat, i, pol.name),
            overhead,
            corrector,
        )
        for i, ((pol, overhead), lat, corrector) in enumerate(
            zip(planners, latencies, correctors, strict=True))
    ]
    for rep in replicas:
        rep.measure_cpu = config.measure_policy_cpu
    router = make_router(config.router, config.router_seed)
    alive = list(replicas)  # routed to, in index order
    t_fail = config.fail_replica_at_s if config.fail_replica_at_s is not None else math.inf
    rerouted = lost = 0
    reqs = [_sim_request(s, tiers, config) for s in specs]
    for a, b in itertools.pairwise(specs):
        if b.arrival_s < a.arrival_s:
            raise ValueError(f"workload not sorted by arrival at request {b.key} ({b.arrival_s})")
    horizon = (
        (specs[-1].arrival_s + config.drain_s) if specs and config.drain_s is not None else math.inf
    )
    if monitor is not None:
        monitor.bind(reqs)
    next_check = monitor_every_s
    stopped_by_monitor = False
    wall0 = time.perf_counter()
    heap: list[tuple[float, int, int]] = []
    seq = 0
    n_arrived = 0
    skipped_plans = 0
    now = 0.0
    n = len(reqs)
    arrivals = [s.arrival_s for s in specs]
    skip_fixed, ff_on, ff_max = (
        config.skip_fixed_plans, config.fast_forward, config.fast_forward_max_steps
    )
    # A decode run applies its steps only when settled and times them without their start
    # times: a correcting planner must see each step, and slow spells need each one's time.
    ff_on = ff_on and not timing.planner_correction and not timing.spell_rate_hz

    def push(rep: Replica, end: float) -> None:
        nonlocal seq
        heapq.heappush(heap, (end, seq, rep.index))
        seq += 1

    def start(rep: Replica, t: float) -> None:
        nonlocal skipped_plans
        if not rep.running and not rep.waiting:
            return
        skip = skip_fixed and rep.policy.fixed_decode_steps
        fixed = fixed_decode_items(rep) if skip else None
        if fixed is not None:  # the policy's plan is known: run it without asking
            items, decode_only = fixed, True
            skipped_plans += 1
        else:
            while True:
                plan = rep.plan(t)
                items, preempted = rep.check_plan(plan, t)
                if preempted:
                    rep.preempt(preempted)
                if items:
                    break
                if not preempted:
                    return  # idle until something arrives for it
                # A preempt-only plan: ask again (terminates: each round shrinks the running set).
            decode_only = ff_on and is_decode_only_plan(rep, plan, items)
        run = start_decode_run(rep, items, t, ff_max) if ff_on and decode_only else None
        push(rep, rep.begin_run(run) if run is not None else rep.launch(items, t))

    while True:
        t_arr = arrivals[n_arrived] if n_arrived < n else math.inf
        t_step = heap[0][0] if heap else math.inf
        t_next = min(t_arr, t_step, t_fail)
        if t_next == math.inf or t_next > horizon:
            break
        now = t_next
        if monitor is not None and now >= next_check:
            next_check = now + monitor_every_s
            for rep in replicas:
                rep.settle_run()  # the monitor reads the requests
            if monitor.should_stop(now):
                stopped_by_monitor = True
                break
        if t_fail <= t_arr and t_fail <= t_step:
            t_fail = math.inf
            dead = replicas[config.fail_replica]
            unstarted, gone = dead.fail()
            alive.remove(dead)
            lost += len(gone)
            idle: dict[int, Replica] = {}
            for req in unstarted:
                req.reroutes += 1
                rep = alive[router.route(req, alive, now)]
                rep.enqueue(req)
                if not rep.busy:
                    idle[rep.index] = rep
            rerouted += len(unstarted)
            for rep in idle.values():
                start(rep, now)
        elif t_arr <= t_step:
            woken: dict[int, Replica] = {}  # simultaneous arrivals all join before a step starts
            while n_arrived < n and arrivals[n_arrived] == now:
                req = reqs[n_arrived]
                n_arrived += 1
                rep = alive[router.route(req, alive, now)]
                rep.enqueue(req)
                if not rep.busy:
                    woken[rep.index] = rep
            for rep in woken.values():
                start(rep, now)
        else:
            _, _, idx = heapq.heappop(heap)
            rep = replicas[idx]
            if not rep.alive:
                continue  # the step of a replica that failed meanwhile never ends
            if rep.run is None:
                rep.complete(now)
            elif (end := rep.next_run_step()) is not None:
                push(rep, end)  # a decode run goes on: nothing to plan
                continue
            start(rep, now)

    for rep in replicas:
        rep.settle_run()  # a run cut by the horizon or the monitor: its finished steps
    stopped_early = any(not r.finished and not r.lost for r in reqs)
    if stopped_early and horizon == math.inf and not stopped_by_monitor:
        stuck = [rep for rep in replicas if rep.outstanding]
        raise SimulationStalled(
            f"policy {stuck[0].policy.name!r} scheduled nothing on replica {stuck[0].index} at "
            f"t={now:.3f}s with {len(stuck[0].running)} running and {len(stuck[0].waiting)} "
            "waiting requests, and no arrival is left"
        )
    _check_conservation(reqs, replicas, complete=not stopped_early)
    wall = time.perf_counter() - wall0
    stats = {
        "sim_wall_s": wall,
        "end_s": now,
        "requests": n,
        "finished": sum(r.finished for r in reqs),
        "stopped_at_horizon": stopped_early and not stopped_by_monitor,
        "stopped_early": stopped_by_monitor,
        "steps": sum(rep.steps for rep in replicas),
        "policy_calls": sum(rep.policy_calls for rep in replicas),
        "policy_wall_s": sum(rep.policy_s for rep in replicas),
        "policy_cpu_s": (
            sum(rep.policy_cpu_s for rep in replicas) if config.measure_policy_cpu else None
        ),
        "fast_forwarded_steps": sum(rep.fast_forwarded for rep in replicas),
        "skipped_plans": skipped_plans,
        "tokens_run": sum(rep.tokens_run for rep in replicas),
        "preemptions": sum(rep.preemptions for rep in replicas),
        "fleet": config.fleet,
        "failed_replica": config.fail_replica if not replicas[config.fail_replica].alive else None,
        "rerouted": rerouted,
        "lost": lost,
        "timing": timing.label(policies[0].name),
        # each replica's online correction at the end (planner_correction; else None)
        "planner_scale": [rep.corrector.scale if rep.corrector is not None else None
                          for rep in replicas],
    }
    return SimResult([r.record() for r in reqs], now, stats)


def _planning_policy(factory: Callable[[LatencyModel], Policy], latency: LatencyModel,
                     timing: TimingConfig) -> tuple[Policy, StepOverhead | None]:
    """The policy of one replica, and the ``StepOverhead`` it plans with, if any. Where the
    timing adds planning time to steps, the policy plans with it, as the engine adapter's
    policy plans with the host time it measures: a step's tokens come that much after its
    forward pass (the replica sets the time of each step, ``TimingModel.plan_time``)."""
    policy = factory(latency)
    plan_s = timing.plan_time_s(policy.name)
    if plan_s <= 0:
        return policy, None
    overhead = StepOverhead(latency, plan_s)
    return factory(overhead), overhead


def _corrector(latency: LatencyModel, decay: float) -> LiveLatencyModel | None:
    """A copy of ``latency`` that the planner corrects online (the engine adapter's class and
    rule), starting from the correction ``latency`` carries; None when ``decay`` is 0."""
    if decay <= 0:
        return None
    if isinstance(latency, LiveLatencyModel):
        return LiveLatencyModel(latency.current, latency.version, correction_decay=decay,
                                max_scale=latency.max_scale, initial_scale=latency.scale,
                                host_s=latency.host_s)
    return LiveLatencyModel(latency, "sim", correction_decay=decay)


def _policy_factory(
    policy: str | Callable[[LatencyModel], Policy], overrides: dict[str, Any] | None
) -> Callable[[LatencyModel], Policy]:
    if not isinstance(policy, str):
        return policy
    name, cfg = policy, dict(overrides or {})
    make_policy(name, RooflineModel(), **cfg)  # fail early, naming the bad name or field
    return lambda lat: make_policy(name, lat, **cfg)


def _sim_request(spec: RequestSpec, tiers: TierSet, config: SimConfig) -> SimRequest:
    tier = tiers[spec.tier]
    if spec.prompt_len + spec.output_len - 1 > config.max_model_len:
        raise ValueError(
            f"request {spec.key}: prompt {spec.prompt_len} + output {spec.output_len} tokens "
            f"exceed max_model_len {config.max_model_len}"
        )
    view = RequestView(
        key=spec.key,
        tier=tier,
        arrival_s=spec.arrival_s,
        prompt_len=spec.prompt_len,
        num_computed=0,
        num_generated=0,
    )
    return SimRequest(
        spec=spec,
        view=view,
        token_times=[] if config.record_token_times else None,
        due0=spec.arrival_s + tier.ttft_s,
        tpot=tier.tpot_s,
        cap=spec.arrival_s + tier.e2e_s if tier.e2e_s is not None else math.inf,
    )


def _check_conservation(reqs: list[SimRequest], replicas: list[Replica], complete: bool) -> None:
    for r in reqs:
        v, s = r.view, r.spec
        if r.tokens_run != v.num_computed + r.tokens_discarded:
            raise ConservationError(
                f"request {s.key}: ran {r.tokens_run} tokens but holds {v.num_computed} "
                f"+ discarded {r.tokens_discarded}"
            )
        if r.finished and r.lost:
            raise ConservationError(f"request {s.key}: both finished and lost")
        if r.finished and (
            v.num_generated != s.output_len or v.num_computed != s.prompt_len + s.output_len - 1
        ):
            raise ConservationError(
                f"request {s.key}: finished with {v.num_generated}/{s.output_len} tokens, "
                f"{v.num_computed} computed"
            )
        if v.num_generated > s.output_len:
            raise ConservationError(f"request {s.key}: emitted {v.num_generated} > {s.output_len}")
    ran = sum(rep.tokens_run for rep in replicas)
    if ran != sum(r.tokens_run for r in reqs):
        raise ConservationError(f"replicas ran {ran} tokens, requests account for a different sum")
    if complete:
        for r in reqs:
            if not (r.finished or r.lost):
                raise ConservationError(f"request {r.spec.key}: neither finished nor lost")
        for rep in replicas:
            if rep.free_blocks != rep.total_blocks or rep.requests or rep.outstanding:
                raise ConservationError(
                    f"replica {rep.index}: {rep.total_blocks - rep.free_blocks} KV blocks or "
                    f"{rep.outstanding} requests left after every request finished"
                )
