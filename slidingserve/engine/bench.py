"""``slidingserve bench engine``: an open-loop workload through an in-process ``AsyncLLM``.

One trial: requests arrive as a Poisson process at ``rate`` for ``duration_s`` seconds (lengths
drawn from the trace, scaled to the tiny model's context), each sent at its arrival time, in real
time, whatever the engine's state (open loop); every output token is timestamped on the client.
After the last arrival the engine gets ``drain_s`` to finish; what is left is aborted and counts
as a violation. The summary is the shared ``slidingserve.metrics`` format plus the scheduler's
own overhead per step (from the step trace the adapter writes).

SLOs are set relative to the engine's measured unloaded latency (``Calibration``): TTFT targets
are multiples of the unloaded TTFT of a median prompt, TPOT targets multiples of the unloaded
single-request decode step. The calibration is measured once and reused for every scheduler of
a run (or read from ``--calibration``), so all schedulers face identical SLOs. The engine starts
before the calibration exists, so each request carries its tier's calibrated targets explicitly
(``slo_ttft_ms``/``slo_tpot_ms`` in ``extra_args``); the engine's tier file only names the tiers.

The simulator's prediction of each trial (``summary["simulated"]``, and with ``find_capacity``
the simulator's own capacity search) is computed once every engine has run (``predict.py``).

Schedulers: ``vllm-default`` / ``vllm-priority`` are vLLM's own scheduler (FCFS, or priority =
the tier's priority), its decisions untouched, run through ``traced.TracedScheduler`` so that
their steps are traced like ours; any registered policy name (``slidingserve``, ``qoserve``,
``sarathi``, ``edf``, ``vllm-fcfs``, ...) runs through ``SlidingServeScheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.engine.bench_config import (
    DEFAULT_LATENCY_MODEL,
    VLLM_OWN,
    BenchConfig,
    Calibration,
    ranked_scales,
    scaled_workload,
)
from slidingserve.engine.config import (
    SCHEDULER_CLS,
    TRACED_SCHEDULER_CLS,
    additional_config,
    traced_additional_config,
)
from slidingserve.engine.knee import search_capacities, sweep_capacities
from slidingserve.engine.progress import TrialProgress
from slidingserve.engine.slo import slo_extra_args
from slidingserve.metrics.host import host_info
from slidingserve.metrics.records import RequestRecord, write_records_csv
from slidingserve.metrics.summary import summarize, worst_tier_violation_rate
from slidingserve.slo.tiers import TierSet
from slidingserve.workload.spec import RequestSpec


def engine_kwargs(cfg: BenchConfig, scheduler: str, model: Path, tiers: TierSet | None,
                  step_trace: Path) -> dict[str, Any]:
    from slidingserve.models import cpu_engine_kwargs

    kw = cpu_engine_kwargs(
        model, kv_cache_memory_bytes=cfg.kv_cache_bytes, max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens,
        seed=cfg.seed,
    )
    if scheduler in VLLM_OWN:  # vLLM's own decisions; TracedScheduler only measures them
        kw["scheduling_policy"] = VLLM_OWN[scheduler]
        kw["scheduler_cls"] = TRACED_SCHEDULER_CLS
        kw["additional_config"] = traced_additional_config(
            str(step_trace), policy=scheduler, model_name=model.name)
        return kw
    latency = cfg.latency_model or (DEFAULT_LATENCY_MODEL if DEFAULT_LATENCY_MODEL.is_dir()
                                    else None)
    kw["scheduler_cls"] = SCHEDULER_CLS
    policy, overrides = cfg.policy_of(scheduler)
    kw["additional_config"] = additional_config(
        policy=policy,
        policy_config=overrides,
        tiers=None if tiers is None else tiers.to_dict(),
        latency_model=None if latency is None else str(latency),
        step_trace=str(step_trace),
        model_name=model.name,
    )
    return kw


class EngineBench:
    """One ``AsyncLLM`` (one scheduler) and the trials run on it."""

    def __init__(self, cfg: BenchConfig, scheduler: str, tiers: TierSet | None, out: Path):
        self.cfg, self.scheduler, self.tiers = cfg, scheduler, tiers
        self.out = out
        self.step_trace = out / "steps.csv"
        self._trial = 0
        self.engine: Any = None

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from slidingserve.models import ensure_tiny_model

        self.model = ensure_tiny_model()
        self.out.mkdir(parents=True, exist_ok=True)
        kw = engine_kwargs(self.cfg, self.scheduler, self.model, self.tiers, self.step_trace)
        kw["disable_log_stats"] = True
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kw))

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    async def _request(self, spec: RequestSpec, t0: float, priority: int,
                       extra_args: dict[str, Any] | None) -> RequestRecord:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        await asyncio.sleep(max(0.0, t0 + spec.arrival_s - time.perf_counter()))
        params = SamplingParams(
            max_tokens=spec.output_len, ignore_eos=True, temperature=0.0,
            output_kind=RequestOutputKind.DELTA,
                extra_args=extra_args,
        )
        rng = np.random.default_rng(spec.key)
        prompt = {"prompt_token_ids": rng.integers(10, 8000, spec.prompt_len).tolist()}
        arrival = time.perf_counter() - t0
        times: list[float] = []
        finished = False
        rid = f"bench{self._trial}-{spec.key}"
        try:
            async for out in self.engine.generate(prompt, params, request_id=rid,
                                                  priority=priority):
                n = len(out.outputs[0].token_ids)
                if n:
                    times.extend([time.perf_counter() - t0] * n)
                finished = out.finished
        except asyncio.CancelledError:
            await self.engine.abort(rid)
        return RequestRecord(
            arrival_s=arrival, tier=spec.tier, first_token_s=times[0] if times else None,
            last_token_s=times[-1] if times else None, n_out=len(times),
            finished=finished and len(times) == spec.output_len, token_times=times,
            expected_tokens=spec.output_len, key=spec.key,
        )

    async def trial(self, specs: list[RequestSpec], tiers: TierSet) -> list[RequestRecord]:
        """Replay ``specs`` in real time; returns one record per request."""
        self._trial += 1
        t0 = time.perf_counter() + 0.5
        own = self.scheduler in VLLM_OWN
        tasks = [
            asyncio.create_task(self._request(
                s, t0, tiers[s.tier].priority if self.scheduler == "vllm-priority" else 0,
                None if own else slo_extra_args(
                    s.tier, tiers[s.tier].ttft_s * 1e3, tiers[s.tier].tpot_s * 1e3),
            ))
            for s in specs
        ]
        last = max((s.arrival_s for s in specs), default=0.0)
        _, pending = await asyncio.wait(
            tasks, timeout=max(0.0, t0 + last + self.cfg.drain_s - time.perf_counter())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [t.result() for t in tasks if not t.cancelled()] + [
            RequestRecord(arrival_s=s.arrival_s, tier=s.tier, first_token_s=None,
                          last_token_s=None, n_out=0, finished=False, key=s.key,
                          expected_tokens=s.output_len)
            for s, t in zip(specs, tasks, strict=True) if t.cancelled()
        ]

    async def calibrate(self, cfg: BenchConfig, prompt_len: int, repeats: int = 3) -> Calibration:
        """Unloaded TTFT of ``prompt_len`` and decode step, one request at a time (median)."""
        spec = RequestSpec(key=10**6, arrival_s=0.0, prompt_len=prompt_len, output_len=33,
                           tier=ranked_scales(cfg.scales)[0][0])
        ttfts, steps = [], []
        for i in range(repeats + 1):  # the first request warms the engine up
            self._trial += 1
            rec = await self._request(spec, time.perf_counter(), 0, None)
            if i and rec.first_token_s is not None and rec.tpot_s is not None:
                ttfts.append(rec.first_token_s - rec.arrival_s)
                steps.append(rec.tpot_s)
        return Calibration(float(np.median(ttfts)), float(np.median(steps)), prompt_len)

    def overhead(self, since_s: float) -> dict[str, Any] | None:
        """The adapter's per-step overhead since ``since_s`` (wall clock), from its step trace."""
        if not self.step_trace.exists():
            return None
        from predictor.steptrace import TIMESTAMP_COLUMN, read_steptrace

        trace = read_steptrace(self.step_trace)
        ts = np.asarray(trace.extra[TIMESTAMP_COLUMN], dtype=float)
        keep = ts >= since_s
        if not keep.any():
            return None
        plan = np.asarray(trace.extra["plan_s"], dtype=float)[keep]
        plan_cpu = np.asarray(trace.extra["plan_cpu_s"], dtype=float)[keep]
        sched = np.asarray(trace.extra["sched_s"], dtype=float)[keep]
        step = trace.latency_s[keep]
        preempted: dict[str, float] = {c: float(np.asarray(trace.extra[c], dtype=float)[keep].sum())
                     for c in ("preempted", "preempted_tokens") if c in trace.extra}
        return {
            **preempted,  # requests preempted, and the computed tokens they discarded
            "steps": int(keep.sum()),
            "plan_ms": _pct(plan * 1e3),
            "plan_cpu_ms": _pct(plan_cpu * 1e3),  # the planning thread's CPU time
            "sched_ms": _pct(sched * 1e3),
            "step_ms": _pct(step * 1e3),
            "plan_share": float(plan.sum() / (step.sum() + sched.sum())),
            "sched_share": float(sched.sum() / (step.sum() + sched.sum())),
            "latency_versions": sorted(set(np.asarray(trace.extra["latency_version"])[keep]
                                           .tolist())),
        }


def _pct(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def median_prompt(cfg: BenchConfig, tiers_for_lengths: TierSet) -> int:
    specs = scaled_workload(cfg, 10.0, tiers_for_lengths, cfg.seed + 1)
    return int(np.median([s.prompt_len for s in specs]))


def trials_planned(cfg: BenchConfig, schedulers: int, search: bool,
                   rates: list[float] | None = None, max_trials: int = 7) -> tuple[int, bool]:
    """(trials, whether that is an upper bound) of a run: one per scheduler, rate and workload
    seed. A rate sweep may stop early; a bisection runs at most ``max_trials`` rates for each
    of its two capacity definitions."""
    seeds = len(cfg.trial_seeds())
    if not search:
        return schedulers * seeds, False
    per_scheduler = len(rates) if rates is not None else 2 * max_trials
    return schedulers * per_scheduler * seeds, rates is None or len(rates) > 2


async def run_trial(bench: EngineBench, cfg: BenchConfig, rate: float, tiers: TierSet,
                    calib: Calibration, progress: TrialProgress | None = None,
                    turn: asyncio.Lock | None = None) -> dict[str, Any]:
    """One workload per trial seed, in seed order; the summary pools their requests and lists
    each seed's attainment (``seeds``). ``progress`` gets a line per workload. ``turn``: a
    lock held for each workload (trials of other engines take turns on it between two
    workloads); None: the workloads run back to back."""
    wall0 = time.time()
    records: list[RequestRecord] = []
    per_seed: dict[str, float] = {}
    windows: dict[str, list[float]] = {}
    seeded: list[tuple[int, list[RequestRecord]]] = []
    for seed in cfg.trial_seeds():
        async with turn or contextlib.nullcontext():
            if progress is not None:
                progress.started(bench.scheduler, rate, seed)
            t0 = time.time()
            got = await bench.trial(scaled_workload(cfg, rate, tiers, seed), tiers)
            windows[str(seed)] = [t0, time.time()]
            per_seed[str(seed)] = summarize(got, tiers)["overall"]["slo_attainment"]
            if progress is not None:
                progress.finished(bench.scheduler, rate, seed, per_seed[str(seed)])
        records += got
        seeded.append((seed, got))
    write_records_csv(requests_csv(bench.out, rate), seeded, tiers)
    summary = summarize(records, tiers)
    summary.update({
        "scheduler": bench.scheduler,
        "rate_rps": rate,
        "seeds": per_seed,
        "worst_tier_violation_rate": worst_tier_violation_rate(summary),
        "calibration": asdict(calib),
        "tiers_used": tiers.to_dict(),
        "scheduler_overhead": bench.overhead(wall0),
        "window_s": [wall0, time.time()],  # wall clock: the trial's rows of the step trace
        "seed_windows_s": windows,  # and each workload's
        "config": json.loads(cfg.model_dump_json()),
    })
    return summary


def requests_csv(folder: Path, rate: float, simulated: bool = False) -> Path:
    """Where a trial's per-request records go (``metrics.records.write_records_csv``): beside
    the scheduler's step trace, the simulator's prediction of the trial beside them."""
    return folder / "requests" / f"rate-{rate:g}{'.sim' if simulated else ''}.csv"


def write_capacity(out: Path, policies: dict[str, Any], calib: Calibration, cfg: BenchConfig,
                   **extra: Any) -> None:
    """``capacity.json``: every scheduler's figures with the calibration, config and host."""
    write_json(out / "capacity.json", {"policies": policies, "calibration": asdict(calib),
                                       "config": json.loads(cfg.model_dump_json()),
                                       "host": host_info(), **extra})


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


async def _calibrated(bench: EngineBench, cfg: BenchConfig, out: Path,
                      calib: Calibration | None) -> Calibration:
    if calib is None:
        placeholder = Calibration.placeholder().tiers(cfg.scales)
        calib = await bench.calibrate(cfg, median_prompt(cfg, placeholder))
        write_json(out / "calibration.json", asdict(calib))
    return calib


async def compare(cfg: BenchConfig, schedulers: list[str], rate: float, out: Path,
                  calib: Calibration | None = None, progress: TrialProgress | None = None
                  ) -> dict[str, dict[str, Any]]:
    """One trial per scheduler at ``rate``, one engine at a time, identical SLOs."""
    results: dict[str, dict[str, Any]] = {}
    engine_tiers = Calibration.placeholder().tiers(cfg.scales)
    for name in schedulers:
        bench = EngineBench(cfg, name, engine_tiers, out / name if len(schedulers) > 1 else out)
        await bench.start()
        try:
            calib = await _calibrated(bench, cfg, out, calib)
            summary = await run_trial(bench, cfg, rate, calib.tiers(cfg.scales), calib,
                                      progress)
        finally:
            bench.shutdown()
        write_json(bench.out / "summary.json", summary)
        results[name] = summary
    from slidingserve.engine.predict import predict_trials

    predict_trials(cfg, out, results, rate)  # once every engine has measured the correction
    for name, summary in results.items():
        write_json((out / name if len(schedulers) > 1 else out) / "summary.json", summary)
    return results


async def find_capacity(cfg: BenchConfig, schedulers: list[str], out: Path, start_rps: float,
                        calib: Calibration | None = None, rel_tol: float = 0.15,
                        max_trials: int = 7, rates: list[float] | None = None,
                        progress: TrialProgress | None = None) -> dict[str, Any]:
    """Per scheduler, the highest rate meeting each criterion.

    ``capacity_rps``: worst tier's violation rate <= 1% (QoServe's definition);
    ``capacity_rps_90``: overall attainment >= 90% (DistServe's goodput definition).
    Without ``rates``: bracket from ``start_rps``, then bisect (trials shared between the two
    searches, cached by rate), one scheduler after the other. With ``rates``: every scheduler
    runs the same ascending sweep (``sweep_knee``; it stops after two rates in a row fail both
    criteria), which compares schedulers at identical workloads and is less fooled by one noisy
    trial than bisection; the schedulers' engines all start first and their workloads
    interleave (rate 1 seed 1 of every scheduler, then rate 1 seed 2, ..., then rate 2), so
    that a slow spell of a shared machine falls on every scheduler alike rather than on
    whichever ran then. Once every engine has
    run, the simulator repeats the searches (``simulated``) with the engine's latency model
    times the correction measured while serving, and predicts each measured trial.
    """
    from slidingserve.engine.predict import predict_capacities, serving_scale

    if rates is None:
        policies, calib = await _searched(cfg, schedulers, out, start_rps, calib, rel_tol,
                                          max_trials, progress)
    else:
        policies, calib = await _swept(cfg, schedulers, out, rates, calib, progress)

    tiers = calib.tiers(cfg.scales)
    figures = await predict_capacities(cfg, out, policies, tiers, start_rps, rel_tol, max_trials)
    write_capacity(out, policies, calib, cfg, latency_scale=serving_scale(out), **figures)
    return {"policies": policies, **figures}


TrialCache = dict[float, dict[str, Any]]
TrialFn = Callable[[float], Awaitable[dict[str, Any]]]


def _trial_fn(bench: EngineBench, cfg: BenchConfig, calib: Calibration, cache: TrialCache,
              progress: TrialProgress | None, turn: asyncio.Lock | None = None) -> TrialFn:
    """A scheduler's trial at a rate, cached by rate (``turn``: see ``run_trial``)."""
    tiers = calib.tiers(cfg.scales)

    async def evaluate(rate: float) -> dict[str, Any]:
        key = round(rate, 4)
        if key not in cache:
            cache[key] = await run_trial(bench, cfg, key, tiers, calib, progress, turn)
        return cache[key]

    return evaluate


async def interleaved_sweeps(trials: list[TrialFn], rates: list[float],
                             on_done: Callable[[int], None] | None = None,
                             turn: asyncio.Lock | None = None) -> list[dict[str, Any]]:
    """``sweep_capacities`` of every trial function, taking turns: the first rate of each in
    order, then the second, ... (a sweep that has stopped drops out); ``on_done(i)`` as the
    i-th sweep ends. ``turn``: the lock the trial functions take turns on themselves (for
    each workload of a trial: ``run_trial``); None: one whole trial at a time."""
    whole = asyncio.Lock() if turn is None else None  # FIFO: a finished turn queues behind

    async def sweep(i: int, trial: TrialFn) -> dict[str, Any]:
        async def evaluate(rate: float) -> dict[str, Any]:
            async with whole or contextlib.nullcontext():
                return await trial(rate)
        found = await sweep_capacities(evaluate, rates)
        if on_done is not None:
            on_done(i)
        return found

    return list(await asyncio.gather(*(sweep(i, t) for i, t in enumerate(trials))))


def _record(result: dict[str, Any], trials: TrialCache) -> dict[str, Any]:
    """A scheduler's capacities plus the figures of each of its trials (``capacity.json``)."""
    result["trials"] = {
        str(r): {"attainment": s["overall"]["slo_attainment"],
                 "tiers": {t: g["slo_attainment"] for t, g in s["tiers"].items()},
                 "seeds": s["seeds"],
                 "worst_tier_violation_rate": s["worst_tier_violation_rate"],
                 "scheduler_overhead": s["scheduler_overhead"],
                 "window_s": s["window_s"]}
        for r, s in sorted(trials.items())
    }
    return result


def _unused_trials(cfg: BenchConfig, trials: TrialCache, rates: list[float] | None,
                   max_trials: int) -> int:
    """Workloads a finished search or sweep planned but did not run (they leave the ETA)."""
    planned, _ = trials_planned(cfg, 1, True, rates, max_trials)
    return planned - len(trials) * len(cfg.trial_seeds())


async def _searched(cfg: BenchConfig, schedulers: list[str], out: Path, start_rps: float,
                    calib: Calibration | None, rel_tol: float, max_trials: int,
                    progress: TrialProgress | None) -> tuple[dict[str, Any], Calibration]:
    """``find_capacity`` by bisection: one engine at a time."""
    engine_tiers = Calibration.placeholder().tiers(cfg.scales)
    policies: dict[str, Any] = {}
    for name in schedulers:
        bench = EngineBench(cfg, name, engine_tiers, out / name)
        await bench.start()
        trials: TrialCache = {}
        try:
            calib = await _calibrated(bench, cfg, out, calib)
            found = await search_capacities(_trial_fn(bench, cfg, calib, trials, progress),
                                            start_rps, rel_tol, max_trials)
        finally:
            bench.shutdown()
        if progress is not None:
            progress.drop(_unused_trials(cfg, trials, None, max_trials))
        policies[name] = _record(found, trials)
        write_capacity(out, policies, calib, cfg)
    assert calib is not None
    return policies, calib


async def _swept(cfg: BenchConfig, schedulers: list[str], out: Path, rates: list[float],
                 calib: Calibration | None, progress: TrialProgress | None
                 ) -> tuple[dict[str, Any], Calibration]:
    """``find_capacity`` over ``rates``: every engine up first, workloads interleaved."""
    engine_tiers = Calibration.placeholder().tiers(cfg.scales)
    benches = [EngineBench(cfg, name, engine_tiers, out / name) for name in schedulers]
    caches: list[TrialCache] = [{} for _ in schedulers]
    try:
        for bench in benches:
            await bench.start()
        calib = await _calibrated(benches[0], cfg, out, calib)
        turn = asyncio.Lock()  # one workload at a time, the schedulers' in turn
        found = await interleaved_sweeps(
            [_trial_fn(b, cfg, calib, c, progress, turn)
             for b, c in zip(benches, caches, strict=True)],
            rates, None if progress is None else
            lambda i: progress.drop(_unused_trials(cfg, caches[i], rates, 0)), turn)
    finally:
        for bench in benches:
            bench.shutdown()
    policies = {name: _record(f, c) for name, f, c in zip(schedulers, found, caches, strict=True)}
    write_capacity(out, policies, calib, cfg)
    return policies, calib

