"""The step timing of the engine benchmark's simulator predictions, measured in the same run.

``bench engine`` predicts each trial with the simulator (``predict.simulate_trial``). With
``BenchConfig.sim_timing = "measured"`` the simulator's clock is not the policy's latency
model but what this run's engines measured (``slidingserve/sim/timing.py``):

* step-time noise: ``noise`` timing with sigma = the standard deviation of
  log(measured step / the latency model's prediction of its batch) over every step our
  adapter (or ``TracedScheduler``) ran under the run's folder (every ``steps.csv``,
  calibration included: one engine, one machine), the prediction of the uncorrected model,
  the median ratio being the online correction the simulator applies already
  (``predict.serving_scale``). It holds the engine's own step-to-step noise and the latency
  model's shape-dependent error;
* planning time: the trial's mean per-step overhead from its step trace
  (``EngineBench.overhead``), by default ``sched`` (the wall time of all of ``schedule()``:
  the engine runs no model while it lasts), or ``plan`` (the policy's wall time), ``plan-cpu``
  (its CPU time), ``none``, or with ``measured-trial`` ``cycle`` (everything per step outside
  the model: ``schedule()`` plus ``update_from_output()`` and the engine loop, from the
  trace's timestamps: ``cycle_overhead_s``). vLLM's own schedulers run through
  ``TracedScheduler``, whose ``schedule()`` time is all of sched, plan and plan-cpu.

``measured-trial`` fits the same figures to each trial's own steps
(``trial_step_fits``: the steps run between the trial's start and its end),
and two more: the trial's median ratio measured / predicted, apart for decode-only steps and
for steps with prefill tokens (a machine whose other load grows with the rate runs slower at
high rates than the run-wide correction says, and the latency model's error differs between
the two: on the CPU engine decode-only steps ran at 0.76-0.80 of the model, prefill steps at
0.87-1.13; the simulator's clock is scaled by each ratio over the correction its planner
uses: ``TimingConfig.scale`` / ``prefill_scale``), and since a trial's steps are a time
series, the lag-1 autocorrelation of the log ratio's deviations from those medians (slow
steps come in runs: ``TimingConfig.noise_rho``). Runs of many slow steps in a row (slow
spells: ``slow_steps``) are fitted apart as ``TimingConfig``'s spells (``spell_fit``: their
rate, mean length and factor), the other figures then from the calm steps alone
(``BenchConfig.sim_spells``). These are the trial's measured step times, not its outcome: the
prediction of attainment is still the simulator's, whose planner corrects its model online
as the adapter does (``BenchConfig.sim_planner_correction``).

``measured-workload`` fits all of these to each workload of a trial apart (a trial runs one
workload per seed, ~30-60 s each): the machine's speed is not steady over a trial.
In a held-out run on a 2-core VM, the engine's decode steps ran at 1.3-1.6x the latency
model in most 30 s windows and at 2.0-2.6x for a spell of about three minutes, whichever
scheduler was running; a trial-wide fit spread that spell over the trial's three workloads.

``oracle`` is the earlier prediction: every step as the (corrected) latency model predicts,
no planning time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import F_PREFILL_TOKENS
from slidingserve.sim.config import TimingConfig

PLAN_COLUMNS = {"sched": "sched_ms", "plan": "plan_ms", "plan-cpu": "plan_cpu_ms"}


def measured_noise(out: Path, model: LatencyModel) -> dict[str, Any] | None:
    """sigma of the log ratio measured / predicted over the steps our adapter ran under ``out``
    (module docstring); None when no step was recorded."""
    from predictor.steptrace import read_steptrace

    ratios = []
    for path in sorted(out.glob("**/steps.csv")):
        trace = read_steptrace(path)
        if len(trace):
            ratios.append(np.log(trace.latency_s / model.predict_features(trace.X)))
    r = np.concatenate(ratios) if ratios else np.zeros(0)
    if r.size < 2:
        return None
    return {"sigma": float(np.std(r, ddof=1)), "steps": int(r.size),
            "median_ratio": float(np.exp(np.median(r)))}


MAX_RHO = 0.95  # the AR(1) noise stays stationary
SPELL_STEPS = 15  # steps of the centred window that finds a slow spell
SPELL_X = 2.0  # a slow spell: the window's median step this many times its class median or more


def slow_steps(dev: np.ndarray) -> np.ndarray:
    """The steps inside slow spells: those whose centred window of ``SPELL_STEPS`` steps has
    a median ratio to the class median (``exp(dev)``) of ``SPELL_X`` or more. A spell is the
    machine (or the engine) running slow for many steps in a row, which the online correction
    follows, unlike one slow step."""
    slow = np.zeros(dev.size, dtype=bool)
    if dev.size < SPELL_STEPS:
        return slow
    from numpy.lib.stride_tricks import sliding_window_view

    window = np.median(sliding_window_view(np.exp(dev), SPELL_STEPS), axis=1)
    half = SPELL_STEPS // 2
    slow[half:half + window.size] = window >= SPELL_X
    return slow


def spell_fit(latency_s: np.ndarray, dev: np.ndarray, slow: np.ndarray,
              timestamps: np.ndarray | None) -> dict[str, float]:
    """The slow spells of a trial's steps (``slow``: ``slow_steps``) as ``TimingConfig``'s
    spells: ``count`` runs of slow steps, ``rate_hz`` of them per second of the trial (its
    steps' time span, or their busy time without ``timestamps``), mean length ``mean_s``
    (first step's start to last step's end) and ``x``, the median ratio of their steps to
    the calm steps' class median (``exp(dev)``)."""
    idx = np.flatnonzero(slow)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = idx[np.r_[0, breaks + 1]]
    ends = idx[np.r_[breaks, idx.size - 1]]
    if timestamps is not None:
        lengths = timestamps[ends] - timestamps[starts] + latency_s[starts]
        span = float(timestamps[-1] - timestamps[0] + latency_s[0])
    else:
        cum = np.cumsum(latency_s)
        lengths = cum[ends] - cum[starts] + latency_s[starts]
        span = float(cum[-1])
    return {"count": int(starts.size), "rate_hz": starts.size / max(span, 1e-9),
            "mean_s": float(np.mean(lengths)), "x": float(np.exp(np.median(dev[slow])))}


def step_fit(latency_s: np.ndarray, predicted_s: np.ndarray,
             has_prefill: np.ndarray | None = None,
             timestamps: np.ndarray | None = None) -> dict[str, Any] | None:
    """A trial's measured step timing against the uncorrected model's predictions, in step
    order: ``ratio`` = median measured / predicted of decode-only steps and ``prefill_ratio``
    of steps with prefill tokens (``has_prefill``; None: one class, both the same), each raised
    so that, under the simulated lognormal noise, the class's mean step time is the measured
    one (``median_ratio`` / ``median_prefill_ratio``: before that), ``sigma`` = std of the log
    ratio's deviations from its class median, ``rho`` = their lag-1 autocorrelation
    (0-``MAX_RHO``); ``slow_spell_s`` = the seconds of steps in slow spells (``slow_steps``)
    and ``spells`` their fit (``spell_fit``; None without any). With spells, every other
    figure is of the calm steps, the spells' own figures standing for the rest."""
    latency_s = np.asarray(latency_s, dtype=float)
    r = np.log(latency_s / np.asarray(predicted_s, dtype=float))
    if r.size < 3:
        return None
    pre = np.zeros(r.size, dtype=bool) if has_prefill is None else np.asarray(has_prefill, bool)

    def deviations(keep: np.ndarray) -> tuple[dict[bool, float], np.ndarray]:
        med = {c: float(np.median(r[keep & (pre == c)])) if (keep & (pre == c)).any()
               else float(np.median(r[keep])) for c in (False, True)}
        return med, r - np.where(pre, med[True], med[False])

    med, dev = deviations(np.ones(r.size, dtype=bool))
    slow = slow_steps(dev)
    calm = ~slow
    spells = None
    if slow.any() and calm.sum() >= 3:
        med, dev = deviations(calm)
        spells = spell_fit(latency_s, dev, slow, timestamps)
    else:
        calm[:] = True
    d, p = dev[calm], pre[calm]
    a, b = d[:-1] - d.mean(), d[1:] - d.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    rho = float((a * b).sum()) / denom if denom > 0 else 0.0
    sigma = float(np.std(d, ddof=1))
    # the simulated noise exp(sigma z) has mean exp(sigma^2 / 2); the measured deviations'
    # tail is heavier, so each class's scale is raised by the excess of its measured mean:
    # the simulated engine then does as much work per second as the real one
    lognormal_mean = math.exp(sigma * sigma / 2)
    excess = {c: float(np.exp(d[p == c]).mean()) / lognormal_mean if (p == c).any()
              else 1.0 for c in (False, True)}
    return {"steps": int(r.size), "ratio": math.exp(med[False]) * excess[False],
            "prefill_ratio": math.exp(med[True]) * excess[True], "sigma": sigma,
            "rho": min(max(rho, 0.0), MAX_RHO), "median_ratio": math.exp(med[False]),
            "median_prefill_ratio": math.exp(med[True]),
            "slow_spell_s": float(latency_s[slow].sum()), "spells": spells}


def trial_windows(trials: dict[str, dict[str, Any]], timestamps: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Each trial's rows of a scheduler's step trace (a boolean mask per rate key).

    A trial records ``window_s`` ([start, end] wall clock); without it (older runs), the
    trials ran in ascending rate order, back to back after the calibration, so each one is the
    ``scheduler_overhead["steps"]`` rows before the next one's, counted from the trace's end.
    """
    masks: dict[str, np.ndarray] = {}
    order = sorted(trials, key=float)
    if all("window_s" in trials[k] for k in order):
        for k in order:
            start, end = trials[k]["window_s"]
            masks[k] = (timestamps >= start) & (timestamps <= end)
        return masks
    end = len(timestamps)
    for k in reversed(order):
        overhead = trials[k].get("scheduler_overhead") or {}
        n = int(overhead.get("steps", 0))
        mask = np.zeros(len(timestamps), dtype=bool)
        mask[max(end - n, 0):end] = True
        masks[k] = mask
        end = max(end - n, 0)
    return masks


def workload_windows(trial: dict[str, Any], timestamps: np.ndarray, mask: np.ndarray
                     ) -> dict[int, np.ndarray]:
    """Each workload's rows of a trial's rows ``mask`` (a boolean mask per workload seed).

    A trial records ``seed_windows_s`` (seed -> [start, end] wall clock); without it (older
    runs), its workloads ran back to back in the order of ``seeds``, so the trial's rows are
    cut at their longest gaps between consecutive steps, one cut fewer than workloads (the
    engine idles while the next workload starts).
    """
    seeds = [int(s) for s in trial.get("seeds", {})]
    if "seed_windows_s" in trial:
        return {int(s): mask & (timestamps >= a) & (timestamps <= b)
                for s, (a, b) in trial["seed_windows_s"].items()}
    rows = np.flatnonzero(mask)
    if len(seeds) <= 1 or len(rows) < 2 * len(seeds):
        return {s: mask for s in seeds}
    cuts = np.sort(np.argsort(np.diff(timestamps[rows]))[-(len(seeds) - 1):]) + 1
    windows: dict[int, np.ndarray] = {}
    for seed, lo, hi in zip(seeds, (0, *cuts), (*cuts, len(rows)), strict=True):
        m = np.zeros(len(timestamps), dtype=bool)
        m[rows[lo:hi]] = True
        windows[seed] = m
    return windows


def trial_step_fits(path: Path, trials: dict[str, dict[str, Any]], model: LatencyModel,
                    by_workload: bool = False) -> dict[str, dict[str, Any] | None]:
    """``step_fit`` of each trial (keyed like ``trials``) from the step trace at ``path``;
    ``by_workload``: each fit also holds one per workload of the trial (``workloads``: seed ->
    fit, from ``workload_windows``; None for a workload with too few steps)."""
    from predictor.steptrace import TIMESTAMP_COLUMN, read_steptrace

    if not path.exists():
        return {k: None for k in trials}
    trace = read_steptrace(path)
    ts = np.asarray(trace.extra[TIMESTAMP_COLUMN], dtype=float)
    predicted = model.predict_features(trace.X)
    prefill = trace.X[:, F_PREFILL_TOKENS] > 0
    columns = ("sched_s", "num_running", "num_waiting")
    sched = held = None
    if all(c in trace.extra for c in columns):
        sched = np.asarray(trace.extra["sched_s"], dtype=float)
        held = np.asarray(trace.extra["num_running"], dtype=float) + \
            np.asarray(trace.extra["num_waiting"], dtype=float)

    def fit_of(m: np.ndarray) -> dict[str, Any] | None:
        fit = (step_fit(trace.latency_s[m], predicted[m], prefill[m], ts[m]) if m.any()
               else None)
        if fit is not None:
            cycle = cycle_overhead_s(ts[m], trace.latency_s[m])
            if cycle is not None:
                fit["cycle_s"] = cycle
            if sched is not None and held is not None:
                fit["plan_by_held"] = plan_by_held(sched[m], held[m])
        return fit

    fits: dict[str, dict[str, Any] | None] = {}
    for k, m in trial_windows(trials, ts).items():
        fits[k] = fit = fit_of(m)
        if by_workload and fit is not None:
            fit["workloads"] = {str(seed): fit_of(w)
                                for seed, w in workload_windows(trials[k], ts, m).items()}
    return fits


HELD_BINS = (0, 2, 4, 8, 16, 32, 64, 128)  # requests held by the scheduler when it planned
MIN_BIN_STEPS = 20  # steps a bin needs for its own mean (else the bin below's)


def plan_by_held(sched_s: np.ndarray, held: np.ndarray) -> list[list[float]]:
    """A trial's mean planning time per step (``sched_s``: all of ``schedule()``) by the
    requests the scheduler held (running + waiting), as ``[requests, seconds]`` steps over
    ``HELD_BINS``: a policy's cost grows with its queue, so a burst plans slower than the
    trial's mean says. A bin with fewer than ``MIN_BIN_STEPS`` steps takes the bin below's
    figure (the first one: the trial's mean)."""
    table, value = [], float(np.mean(sched_s)) if len(sched_s) else 0.0
    for lo, hi in zip(HELD_BINS, (*HELD_BINS[1:], math.inf), strict=True):
        m = (held >= lo) & (held < hi)
        if np.count_nonzero(m) >= MIN_BIN_STEPS:
            value = float(np.mean(sched_s[m]))
        table.append([lo, value])
    return table


def held_table(fit: dict[str, Any] | None, source: str) -> tuple[tuple[int, float], ...]:
    """The planning-time table of a trial's fit for ``TimingConfig.plan_s_by_held`` when the
    planning time is ``sched`` (empty otherwise, or when the trace had no such columns)."""
    if source != "sched" or fit is None or "plan_by_held" not in fit:
        return ()
    return tuple((int(n), round(float(sec), 7)) for n, sec in fit["plan_by_held"])


def cycle_overhead_s(timestamps: np.ndarray, latency_s: np.ndarray,
                     busy_gap_s: float = 0.02) -> float | None:
    """The engine's mean time per step outside the model: between two consecutive steps of a
    busy engine (the next one's end within its execution time + ``busy_gap_s``), the period
    from one step's end to the next one's, less the next one's execution: all of
    ``schedule()``, ``update_from_output()`` and the engine loop. None without such pairs."""
    gap = np.diff(timestamps) - latency_s[1:]
    busy = gap < busy_gap_s
    return float(gap[busy].mean()) if busy.any() else None


def plan_time_s(overhead: dict[str, Any] | None, source: str,
                fit: dict[str, Any] | None = None) -> float:
    """A trial's mean planning time per step (s) from its overhead figures (0 without);
    ``cycle``: the trial's ``cycle_s`` from its step fit (``cycle_overhead_s``; ``sched``
    when the fit has none)."""
    if source == "cycle":
        if fit is not None and "cycle_s" in fit:
            return max(float(fit["cycle_s"]), 0.0)
        source = "sched"
    if overhead is None or source == "none":
        return 0.0
    return float(overhead[PLAN_COLUMNS[source]]["mean"]) / 1e3


PER_TRIAL = ("measured-trial", "measured-workload")  # timings fitted to a trial's own steps
Timing = TimingConfig | Mapping[int, TimingConfig]  # one for a trial, or one per workload seed


def fitted_timing(kind: str, fit: dict[str, Any] | None, overhead: dict[str, Any] | None,
                  plan_source: str, planner_scale: float = 1.0, spells: bool = True
                  ) -> Timing:
    """The simulator's timing of one trial from its fit (``trial_step_fits``): one
    ``trial_timing`` for the trial, or with ``measured-workload`` one per workload seed (a
    workload whose steps were too few for a fit takes the trial's)."""
    def one(f: dict[str, Any] | None) -> TimingConfig:
        return trial_timing(kind, f, plan_time_s(overhead, plan_source, f), planner_scale,
                            held_table(f, plan_source), spells)

    if kind == "measured-workload" and fit is not None and fit.get("workloads"):
        return {int(seed): one(f if f is not None else fit)
                for seed, f in fit["workloads"].items()}
    return one(fit)


def trial_timing(kind: str, noise: dict[str, Any] | None, plan_s: float,
                 planner_scale: float = 1.0,
                 plan_s_by_held: tuple[tuple[int, float], ...] = (),
                 spells: bool = True) -> TimingConfig:
    """The simulator's timing for one trial: ``oracle``, or ``measured`` (noise + plan_s), or
    ``measured-trial`` / ``measured-workload`` (``noise`` is then the trial's, or one
    workload's, ``step_fit``: its sigma, rho, its ratio over ``planner_scale``, the
    correction the simulated planner uses, and with ``spells`` its slow spells)."""
    if kind == "oracle":
        return TimingConfig()
    if noise is None:  # nothing measured: the latency model's own timing plus planning time
        return TimingConfig(plan_s=plan_s)
    if kind in PER_TRIAL:
        spell = noise.get("spells") if spells else None
        slow = {"spell_rate_hz": round(spell["rate_hz"], 5), "spell_s": round(spell["mean_s"], 4),
                "spell_x": round(max(spell["x"], 1.0), 3)} if spell else {}
        return TimingConfig(kind="noise", noise_sigma=round(noise["sigma"], 4), **slow,
                            noise_rho=round(noise["rho"], 3),
                            scale=round(noise["ratio"] / planner_scale, 4),
                            prefill_scale=round(noise["prefill_ratio"] / planner_scale, 4),
                            plan_s=plan_s, plan_s_by_held=plan_s_by_held)
    return TimingConfig(kind="noise", noise_sigma=round(noise["sigma"], 4), plan_s=plan_s)


def nearest_key(trials: dict[str, Any], rate: float) -> str | None:
    """The key (a rate) of the measured trial nearest to ``rate`` (its figures stand for the
    simulator's trials at rates the engine did not run)."""
    if not trials:
        return None
    return min(trials, key=lambda r: abs(float(r) - rate))
