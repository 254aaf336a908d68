"""The simulator's side of ``bench engine``: its prediction of every measured trial and its
own capacity search, made once every engine has run.

Same specs, SLOs and limits as the engine's trials, with the engine's latency model times the
online correction our adapter measured while serving (``serving_scale``: the median
``latency_scale`` of the run's step traces), and by default the step timing this run measured
(``sim_timing.py``; the prediction's ``timing`` says which). ``repredict`` recomputes the
predictions of a finished run without any engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.engine.bench import requests_csv, write_json
from slidingserve.engine.bench_config import (
    CPU_BLOCK_SIZE,
    DEFAULT_LATENCY_MODEL,
    KV_BYTES_PER_TOKEN,
    SIM_POLICY,
    BenchConfig,
    Calibration,
    scaled_workload,
)
from slidingserve.engine.knee import search_capacities
from slidingserve.engine.sim_timing import (
    PER_TRIAL,
    Timing,
    fitted_timing,
    measured_noise,
    nearest_key,
    trial_step_fits,
)
from slidingserve.latency import LatencyModel
from slidingserve.metrics.records import RequestRecord, write_records_csv
from slidingserve.metrics.summary import summarize, worst_tier_violation_rate
from slidingserve.sim.config import SimConfig, TimingConfig
from slidingserve.slo.tiers import TierSet, tiers_from_dict


def serving_scale(out: Path) -> float:
    """The online correction the adapter measured while serving: the median ``latency_scale``
    over every step our adapter ran under ``out`` (1.0 when none ran)."""
    from predictor.steptrace import read_steptrace

    scales: list[np.ndarray] = []
    for path in sorted(out.glob("**/steps.csv")):
        trace = read_steptrace(path)
        if "latency_scale" in trace.extra:
            scales.append(np.asarray(trace.extra["latency_scale"], dtype=float))
    values = np.concatenate(scales) if scales else np.zeros(0)
    return float(np.median(values)) if values.size else 1.0


def sim_latency_model(cfg: BenchConfig) -> tuple[LatencyModel, str] | None:
    """The engine's latency model for the simulator's predictions (None: there is none).
    Loaded once per benchmark run and handed to every ``simulate_trial``."""
    from slidingserve.engine.latency_source import load_model_dir

    latency_dir = cfg.latency_model or DEFAULT_LATENCY_MODEL
    return load_model_dir(latency_dir) if latency_dir.is_dir() else None


def engine_sim_config(cfg: BenchConfig) -> SimConfig:
    """The simulator's replica with the engine's limits: its KV blocks, sequences, token
    budget and context length."""
    return SimConfig(
        block_size=CPU_BLOCK_SIZE,
        num_blocks=cfg.kv_cache_bytes // (CPU_BLOCK_SIZE * KV_BYTES_PER_TOKEN) - 1,
        max_num_seqs=cfg.max_num_seqs, max_batch_tokens=cfg.max_num_batched_tokens,
        max_model_len=cfg.max_model_len,
    )


def simulate_trial(cfg: BenchConfig, scheduler: str, rate: float, tiers: TierSet,
                   scale: float = 1.0, model: tuple[LatencyModel, str] | None = None,
                   timing: Timing | None = None,
                   records_path: Path | None = None) -> dict[str, Any]:
    """The simulator's prediction of the same trial: the same workloads (one per trial seed,
    requests pooled), SLOs and limits, and the engine's latency model ``model`` (default:
    ``sim_latency_model(cfg)``; the predictor trained on this engine's profiled steps) times
    ``scale``, the correction the adapter measured while serving (``serving_scale``); steps
    timed by ``timing`` (default: that model, the oracle; a mapping: each workload seed's
    own timing, ``sim_timing.fitted_timing``), its seed the workload's. With
    noise timing the figures are the mean over ``cfg.sim_noise_draws`` draws of the noise
    (near a knee one draw's attainment moved by 10 points): the expected outcome, not one
    sample of it, and the simulated planner corrects its model online as the adapter does
    (``cfg.sim_planner_correction``). ``records_path``: write the per-request records of the
    first draw there (``bench.requests_csv``)."""
    from slidingserve.engine.latency_source import LiveLatencyModel
    from slidingserve.sim.simulator import simulate

    model = model or sim_latency_model(cfg)
    if model is None:
        return {"skipped": f"no latency model at {cfg.latency_model or DEFAULT_LATENCY_MODEL}"}
    latency = LiveLatencyModel(*model, initial_scale=scale)
    version = model[1]
    sim_cfg = engine_sim_config(cfg).model_copy(update={"drain_s": cfg.drain_s})
    policy, overrides = (SIM_POLICY[scheduler], {}) if scheduler in SIM_POLICY else \
        cfg.policy_of(scheduler)
    by_seed = dict(timing) if isinstance(timing, Mapping) else \
        {seed: timing or TimingConfig() for seed in cfg.trial_seeds()}
    draws = cfg.sim_noise_draws if any(t.kind == "noise" for t in by_seed.values()) else 1
    summaries = []
    for draw in range(draws):
        records: list[RequestRecord] = []
        per_seed: list[tuple[int, list[RequestRecord]]] = []
        for seed in cfg.trial_seeds():
            specs = scaled_workload(cfg, rate, tiers, seed)
            noise_seed = seed + NOISE_SEED_STRIDE * draw  # draw 0: the workload's seed
            own = by_seed.get(seed, TimingConfig())
            correction = cfg.sim_planner_correction if own.kind != "oracle" else 0.0
            seeded = sim_cfg.model_copy(update={"timing": own.model_copy(
                update={"seed": noise_seed, "planner_correction": correction})})
            got = simulate(specs, tiers, policy, seeded, latency, policy_config=overrides).records
            records += got
            per_seed.append((seed, list(got)))
        if records_path is not None and draw == 0:
            write_records_csv(records_path, per_seed, tiers)
        summaries.append(summarize(records, tiers))
    tier_names = summaries[0]["tiers"]
    return {
        "policy": policy,
        "latency_model": version,
        "latency_scale": scale,
        "timing": " | ".join(sorted({t.label() for t in by_seed.values()})),
        # the first workload's timing; with one per workload, all of them by seed as well
        "timing_config": by_seed[next(iter(by_seed))].model_dump(mode="json"),
        "timing_config_by_seed": {str(s): t.model_dump(mode="json")
                                  for s, t in by_seed.items()},
        "noise_draws": draws,
        "slo_attainment": _mean(s["overall"]["slo_attainment"] for s in summaries),
        "tiers": {t: _mean(s["tiers"][t]["slo_attainment"] for s in summaries)
                  for t in tier_names},
        "worst_tier_violation_rate": _mean(worst_tier_violation_rate(s) for s in summaries),
        "preemptions": _mean(s["overall"]["preemptions"] for s in summaries),
    }


def _step_fits(cfg: BenchConfig, path: Path, trials: dict[str, Any],
               model: tuple[LatencyModel, str] | None) -> dict[str, Any]:
    """Each trial's measured step timing (``trial_step_fits``, per workload with
    ``measured-workload``) from the step trace at ``path``; empty unless ``cfg.sim_timing``
    fits timing per trial and a latency model is there to compare with."""
    if cfg.sim_timing not in PER_TRIAL or model is None:
        return {}
    return trial_step_fits(path, trials, model[0],
                           by_workload=cfg.sim_timing == "measured-workload")


NOISE_SEED_STRIDE = 1_000_003  # noise seeds of a trial's later draws (apart from any workload's)


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean over the draws; None where no draw has a figure (a tier without requests)."""
    got = [v for v in values if v is not None]
    return float(sum(got) / len(got)) if got else None


def predict_trials(cfg: BenchConfig, out: Path, results: dict[str, dict[str, Any]],
                   rate: float) -> None:
    """The simulator's prediction of each single-rate trial of ``compare`` (``results``: the
    summaries by scheduler, their step traces under ``out``), in place (``"simulated"``)."""
    scale, model = serving_scale(out), sim_latency_model(cfg)
    noise = measured_noise(out, model[0]) if model is not None else None
    for name, summary in results.items():
        folder = out / name if len(results) > 1 else out
        tiers = tiers_from_dict(summary["tiers_used"], source="bench summary")
        fit = noise
        if cfg.sim_timing in PER_TRIAL and model is not None:
            key = str(rate)  # keys are rates (trial_windows orders them)
            fit = _step_fits(cfg, folder / "steps.csv", {key: summary}, model)[key]
        timing = fitted_timing(cfg.sim_timing, fit, summary["scheduler_overhead"],
                               cfg.sim_plan_time, scale, cfg.sim_spells)
        summary["simulated"] = simulate_trial(cfg, name, rate, tiers, scale, model, timing,
                                              requests_csv(folder, rate, simulated=True))
        summary["simulated"]["measured_noise"] = fit


async def predict_capacities(cfg: BenchConfig, out: Path, policies: dict[str, Any],
                             tiers: TierSet, start_rps: float, rel_tol: float,
                             max_trials: int) -> dict[str, Any]:
    """The simulator's side of ``find_capacity`` (its docstring), in place: per scheduler, its
    own capacity search (``simulated``) and a prediction of every measured trial, with the
    step timing ``cfg.sim_timing`` measured in the run under ``out``. Returns the run-wide
    figures for ``capacity.json``: the measured noise (``measured_noise``) and the engine's
    ``throughput_limit``."""
    scale, model = serving_scale(out), sim_latency_model(cfg)
    noise = measured_noise(out, model[0]) if model is not None else None
    timings: dict[str, Callable[[float], Timing]] = {}
    for name, result in policies.items():
        fits = _step_fits(cfg, out / name / "steps.csv", result["trials"], model)

        def timing_at(rate: float, _trials: dict[str, Any] = result["trials"],
                      _fits: dict[str, Any] = fits) -> Timing:
            # the measured trial nearest in rate stands for rates the engine did not run
            key = nearest_key(_trials, rate)
            overhead = None if key is None else _trials[key]["scheduler_overhead"]
            fit = noise if cfg.sim_timing not in PER_TRIAL else \
                None if key is None else _fits.get(key)
            return fitted_timing(cfg.sim_timing, fit, overhead, cfg.sim_plan_time, scale,
                                 cfg.sim_spells)

        timings[name] = timing_at
        result["simulated"] = await _simulated_capacities(cfg, name, tiers, scale, start_rps,
                                                          rel_tol, max_trials, model, timing_at)
        for rate, trial in result["trials"].items():
            sim = simulate_trial(cfg, name, float(rate), tiers, scale, model,
                                 timing_at(float(rate)),
                                 requests_csv(out / name, float(rate), simulated=True))
            trial["simulated"] = {k: sim.get(k) for k in
                                  ("slo_attainment", "worst_tier_violation_rate", "timing",
                                   "tiers", "preemptions")}
            if fits:
                trial["step_fit"] = fits.get(rate)
    return {"measured_noise": noise,
            "throughput_limit": _limit_of_run(cfg, policies, tiers, model, scale, timings)}


def _limit_of_run(cfg: BenchConfig, policies: dict[str, Any], tiers: TierSet,
                  model: tuple[LatencyModel, str] | None, scale: float,
                  timings: dict[str, Callable[[float], Timing]]) -> dict[str, Any] | None:
    """``throughput_limit`` on the step timing measured in the highest-rate trial of vLLM's own
    scheduler (``vllm-default``; else the first scheduler run): its planning time and host gaps
    are the throughput schedule's. None without a latency model or a trial."""
    if model is None or not policies:
        return None
    name = "vllm-default" if "vllm-default" in policies else next(iter(policies))
    if not policies[name]["trials"]:
        return None
    top = max(float(r) for r in policies[name]["trials"])
    timing = timings[name](top)
    own = timing if isinstance(timing, TimingConfig) else timing[min(timing)]
    return {**throughput_limit(cfg, tiers, model, scale, own, top),
            "timing_of": name, "timing_rate_rps": top}


def throughput_limit(cfg: BenchConfig, tiers: TierSet, model: tuple[LatencyModel, str],
                     scale: float, timing: TimingConfig, start_rps: float) -> dict[str, Any]:
    """The engine's throughput limit in the simulator, beside its capacities: the rule of
    ``capacity.limit`` (no SLO; decodes-first at the engine's token budget; the highest rate
    with at most 2% of the requests still queued at the last arrival) on the trials' workload
    (lengths scaled alike, the first workload seed, ``cfg.limit_requests`` arrivals), with the
    engine's latency model times the serving correction ``scale`` and steps timed by
    ``timing``; the search starts at ``start_rps``. A reference for how close the capacities
    come to what the engine can carry at all, not a proof that no schedule does better."""
    from slidingserve.capacity.limit import backlog_fraction, highest_stable_rate, unjudged
    from slidingserve.engine.latency_source import LiveLatencyModel

    sim_cfg = engine_sim_config(cfg).model_copy(update={"timing": timing})
    free, seed, num_requests = unjudged(tiers), cfg.trial_seeds()[0], cfg.limit_requests

    def backlog(rate: float) -> float:
        long = cfg.model_copy(update={"duration_s": num_requests / rate})
        specs = scaled_workload(long, rate, tiers, seed)
        latency = LiveLatencyModel(*model, initial_scale=scale)
        return backlog_fraction(specs, free, sim_cfg, latency, cfg.max_num_batched_tokens)

    return {"rate_rps": highest_stable_rate(backlog, start_rps), "timing": timing.label(),
            "budget": cfg.max_num_batched_tokens, "num_requests": num_requests}


async def repredict(out: Path, sim_timing: str, sim_plan_time: str, start_rps: float = 1.0,
                    rel_tol: float = 0.15, max_trials: int = 7,
                    planner_correction: float | None = None,
                    spells: bool | None = None) -> dict[str, Any]:
    """Recompute the simulator's predictions of a finished ``find_capacity`` run in ``out``
    (its ``capacity.json``, calibration and step traces) with another step timing; rewrites
    ``capacity.json``. No engine runs."""
    path = out / "capacity.json"
    if not path.is_file():
        raise ValueError(f"--repredict: {str(path)!r} does not exist (run --find-capacity first)")
    data = json.loads(path.read_text())
    update: dict[str, Any] = {"sim_timing": sim_timing, "sim_plan_time": sim_plan_time}
    if planner_correction is not None:
        update["sim_planner_correction"] = planner_correction
    if spells is not None:
        update["sim_spells"] = spells
    cfg = BenchConfig(**{**data["config"], **update})
    calib = Calibration(**data["calibration"])
    policies = data["policies"]
    for result in policies.values():  # the previous prediction's figures go
        result.pop("simulated", None)
        for trial in result["trials"].values():
            trial.pop("simulated", None)
            trial.pop("step_fit", None)
    figures = await predict_capacities(cfg, out, policies, calib.tiers(cfg.scales), start_rps,
                                       rel_tol, max_trials)
    data.update(policies=policies, config=json.loads(cfg.model_dump_json()),
                latency_scale=serving_scale(out), **figures)
    write_json(path, data)
    return data


def predict_variants(out: Path, variants: dict[str, tuple[str, dict[str, Any]]],
                     timing_of: str = "slidingserve", planner_correction: float | None = None,
                     spells: bool | None = None) -> dict[str, Any]:
    """What other policies would have done in a finished ``find_capacity`` run in ``out``:
    every trial of its scheduler ``timing_of`` simulated again with ``timing_of`` itself and
    with each variant (label -> (registered policy, config overrides)) in its place, on that
    trial's measured step timing (the run's ``sim_timing``; the planning time per step is
    ``timing_of``'s, not the variant's; ``planner_correction`` / ``spells``: the simulator's
    ``sim_planner_correction`` / ``sim_spells`` instead of the run's). Writes
    ``variants.json``; no engine runs."""
    path = out / "capacity.json"
    if not path.is_file():
        raise ValueError(f"--repredict: {str(path)!r} does not exist (run --find-capacity first)")
    data = json.loads(path.read_text())
    if timing_of not in data["policies"]:
        raise ValueError(f"--scheduler: {timing_of!r} did not run in {str(out)!r} (it ran "
                         f"{sorted(data['policies'])})")
    stored = data["config"]
    update: dict[str, Any] = {"variants": {**stored.get("variants", {}), **variants}}
    if planner_correction is not None:
        update["sim_planner_correction"] = planner_correction
    if spells is not None:
        update["sim_spells"] = spells
    cfg = BenchConfig(**{**stored, **update})
    tiers = Calibration(**data["calibration"]).tiers(cfg.scales)
    scale, model = serving_scale(out), sim_latency_model(cfg)
    if model is None:
        raise ValueError("no latency model for the simulator (see --latency-model)")
    trials = data["policies"][timing_of]["trials"]
    fits = _step_fits(cfg, out / timing_of / "steps.csv", trials, model)
    noise = measured_noise(out, model[0])
    rows = []
    for rate, trial in sorted(trials.items(), key=lambda kv: float(kv[0])):
        fit = fits.get(rate) if cfg.sim_timing in PER_TRIAL else noise
        timing = fitted_timing(cfg.sim_timing, fit, trial["scheduler_overhead"],
                               cfg.sim_plan_time, scale, cfg.sim_spells)
        for label in (timing_of, *variants):
            sim = simulate_trial(cfg, label, float(rate), tiers, scale, model, timing)
            rows.append({"label": label, "policy": cfg.policy_of(label)[0]
                         if label not in SIM_POLICY else SIM_POLICY[label],
                         "overrides": variants.get(label, ("", {}))[1], "rate_rps": float(rate),
                         "measured": trial["attainment"] if label == timing_of else None,
                         **{k: sim[k] for k in ("slo_attainment", "tiers", "timing",
                                                "worst_tier_violation_rate", "preemptions")}})
    result = {"timing_of": timing_of, "rows": rows}
    write_json(out / "variants.json", result)
    return result


async def _simulated_capacities(cfg: BenchConfig, name: str, tiers: TierSet, scale: float,
                                start_rps: float, rel_tol: float, max_trials: int,
                                model: tuple[LatencyModel, str] | None,
                                timing_at: Callable[[float], Timing]) -> dict[str, Any]:
    if model is None:
        return {"skipped": "no latency model"}
    cache: dict[float, dict[str, Any]] = {}

    async def evaluate(rate: float) -> dict[str, Any]:
        key = round(rate, 4)
        if key not in cache:
            sim = simulate_trial(cfg, name, key, tiers, scale, model, timing_at(key))
            cache[key] = {"worst_tier_violation_rate": sim["worst_tier_violation_rate"],
                          "overall": {"slo_attainment": sim["slo_attainment"]}}
        return cache[key]

    result = await search_capacities(evaluate, start_rps, rel_tol, max_trials)
    del result["budget"]
    return result
