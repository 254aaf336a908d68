"""The step-rate bound: how many requests/s a replica can serve when a tight TPOT sets the pace.

A tier judged on its mean TPOT ``tau`` needs, while one of its requests decodes, at least one
step every ``tau`` on average: ``1 / tau`` steps per second. Every step pays a fixed part (the
weights read once, the step's overhead: ``fixed_step_s``), and every decoded token adds its own
part (its KV reads and write). Read from the latency model as an affine fit of decode-only steps,

    t(decode-only step) ~= fixed_step_s + per_decode_s x decodes + per_context_token_s x sum(ctx)

so one second holds ``busy x fixed_step_s / tau`` of fixed parts (``busy``: the fraction of time
some request of that tier decodes, M/G/inf with each decode paced at ``tau``:
``1 - exp(-share x rate x E[output - 1] x tau)``) plus ``rate x per_request_decode_s`` of
decode parts (every tier's requests decode, at their mean context over the trace's lengths).
The bound is the rate where the two fill the second. Prefill, and the decodes' compute, are
left out (free on a memory-bound step, so leaving them out only raises the bound): no schedule
serves more than this on that latency model. Where the model is the roofline or QoServe's
linear one the fit is exact (``fit_max_rel_error`` ~0); for a learned model, not affine, the
fit is moved down until it is at or below every step it was fitted on, so the bound stays above
what the model allows, looser by as much as the fit is off.

Beside the throughput limit (``capacity.limit``, no SLO) it tells which of the two binds a cell:
at SLO scale 0.25 (interactive 12.5 ms TPOT against a 10.4 ms weight read plus overhead on the
H100 roofline) this bound, not throughput, is the ceiling.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import BatchShape, features_of_many
from slidingserve.slo import TierSet, load_tiers, scale_tiers

# Decode-only steps the fit reads: decodes x context length per decode (memory-bound on a GPU).
_FIT_DECODES = (1, 4, 16, 32)
_FIT_CONTEXT = (128, 1024, 4096)


def decode_step_fit(latency: LatencyModel) -> dict[str, float]:
    """The affine fit of decode-only step times (module docstring), moved down until it is at or
    below every step it was fitted on (a lower envelope: the bound stays a bound where the model
    is not affine), with its largest error before the move."""
    shapes = [BatchShape(decode_ctx=(c,) * n) for n in _FIT_DECODES for c in _FIT_CONTEXT]
    t = np.asarray(latency.predict_features(features_of_many(shapes)), dtype=np.float64)
    a = np.array([[1.0, float(len(s.decode_ctx)), float(sum(s.decode_ctx))] for s in shapes])
    coef, *_ = np.linalg.lstsq(a, t, rcond=None)
    coef[1:] = np.maximum(coef[1:], 0.0)
    over = a @ coef - t
    return {"fixed_step_s": float(coef[0] - max(float(over.max()), 0.0)),
            "per_decode_s": float(coef[1]), "per_context_token_s": float(coef[2]),
            "fit_max_rel_error": float(np.max(np.abs(over) / t))}


def step_rate_bound(
    latency: LatencyModel,
    tiers: TierSet,
    prompt_len: np.ndarray,
    output_len: np.ndarray,
    tier_mix: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """The bound for one replica (module docstring); None when no tier with traffic is judged
    on TPOT. ``prompt_len`` / ``output_len``: the workload's lengths (trace or synthetic)."""
    mix = dict(tier_mix) if tier_mix else tiers.mix()
    total = sum(mix.values())
    paced = [tiers[n] for n in tiers if mix.get(n, 0.0) > 0 and tiers[n].judges("tpot")]
    if not paced or total <= 0:
        return None
    tight = min(paced, key=lambda t: t.tpot_s)
    share, tau = mix[tight.name] / total, tight.tpot_s
    fit = decode_step_fit(latency)
    p = np.asarray(prompt_len, dtype=np.float64)
    o = np.asarray(output_len, dtype=np.float64)
    decodes = np.maximum(o - 1.0, 0.0)  # the first token comes with the prefill
    context = decodes * p + decodes * (decodes + 1.0) / 2.0  # sum over the decode steps
    per_request = float(fit["per_decode_s"] * decodes.mean()
                        + fit["per_context_token_s"] * context.mean())
    fixed_share = fit["fixed_step_s"] / tau  # of each second, while the tier decodes

    def busy(rate: float) -> float:
        return 1.0 - math.exp(-share * rate * float(decodes.mean()) * tau)

    if fixed_share >= 1.0:
        rate = 0.0
    else:
        lo, hi = 0.0, 1.0 / per_request if per_request > 0 else 1e9
        for _ in range(100):  # used(rate) = busy x fixed_share + rate x per_request rises
            mid = (lo + hi) / 2.0
            if busy(mid) * fixed_share + mid * per_request <= 1.0:
                lo = mid
            else:
                hi = mid
        rate = lo
    return {
        "rate_rps": rate,
        "tier": tight.name,
        "tpot_s": tau,
        "steps_per_s": 1.0 / tau,
        "per_request_decode_s": per_request,
        "busy_fraction": busy(rate),
        **fit,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from slidingserve.capacity.late_bound import positive_floats

    p = argparse.ArgumentParser(prog="python -m slidingserve.capacity.step_rate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", default=None, help="Trace CSV (default: synthetic lengths).")
    p.add_argument("--tiers", default=None, help="Tier set name or YAML (default: qoserve).")
    p.add_argument("--slo-scale", type=positive_floats, default=[1.0],
                   help="Comma-separated SLO scales (every target x each).")
    p.add_argument("--latency-model", default=None,
                   help="roofline-h100 (default), qoserve-a100, or a predictor model dir.")
    a = p.parse_args(argv)
    from slidingserve.capacity.trial import load_latency_model
    from slidingserve.workload import load_trace, workload_lengths

    prompt, output = workload_lengths(load_trace(a.trace) if a.trace else None)
    latency = load_latency_model(a.latency_model)
    for scale in a.slo_scale:
        b = step_rate_bound(latency, scale_tiers(load_tiers(a.tiers), scale), prompt, output)
        if b is None:
            print(f"SLO x{scale:g}: no tier is judged on its TPOT, no step-rate bound")
            continue
        print(f"SLO x{scale:g}: {b['rate_rps']:.2f} req/s ({b['tier']} {b['tpot_s'] * 1e3:g} ms "
              f"TPOT: >= {b['steps_per_s']:.0f} steps/s of {b['fixed_step_s'] * 1e3:.2f} ms fixed, "
              f"{b['per_request_decode_s'] * 1e3:.2f} ms of decode reads per request, "
              f"busy {b['busy_fraction']:.3f}, fit error {b['fit_max_rel_error']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
