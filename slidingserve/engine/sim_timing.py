"""The step timing of the engine benchmark's simulator predictions, measured in the same run.

``bench engine`` predicts each trial with the simulator (``bench.simulate_trial``). With
``BenchConfig.sim_timing = "measured"`` (the default) the simulator's clock is not the
policy's latency model but what this run's engines measured (``slidingserve/sim/timing.py``):

* step-time noise: ``noise`` timing with sigma = the standard deviation of
  log(measured step / the latency model's prediction of its batch) over every step our
  adapter ran under the run's folder (every ``steps.csv``, calibration included: one engine,
  one machine), the prediction of the uncorrected model, the median ratio being the online
  correction the simulator applies already (``bench.serving_scale``). It holds the engine's
  own step-to-step noise and the latency model's shape-dependent error;
* planning time: the trial's mean per-step overhead from its step trace
  (``EngineBench.overhead``), by default ``sched`` (the wall time of all of ``schedule()``:
  the engine runs no model while it lasts), or ``plan`` (the policy's wall time), ``plan-cpu``
  (its CPU time), ``none``. vLLM's own schedulers write no step trace: no planning time.

``oracle`` is the earlier prediction: every step as the (corrected) latency model predicts,
no planning time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency import LatencyModel
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


def plan_time_s(overhead: dict[str, Any] | None, source: str) -> float:
    """A trial's mean planning time per step (s) from its overhead figures (0 without)."""
    if overhead is None or source == "none":
        return 0.0
    return float(overhead[PLAN_COLUMNS[source]]["mean"]) / 1e3


def trial_timing(kind: str, noise: dict[str, Any] | None, plan_s: float) -> TimingConfig:
    """The simulator's timing for one trial: ``oracle``, or ``measured`` (noise + plan_s)."""
    if kind == "oracle":
        return TimingConfig()
    if noise is None:  # nothing measured: the latency model's own timing plus planning time
        return TimingConfig(plan_s=plan_s)
    return TimingConfig(kind="noise", noise_sigma=round(noise["sigma"], 4), plan_s=plan_s)


def nearest_trial(trials: dict[str, dict[str, Any]], rate: float) -> dict[str, Any] | None:
    """The measured trial at the rate nearest to ``rate`` (its overhead stands for the
    simulator's trials at rates the engine did not run)."""
    if not trials:
        return None
    return trials[min(trials, key=lambda r: abs(float(r) - rate))]
