"""The chunker's step-time ceiling in the simulator: where a step's decodes cost more than their
sum, longer steps settle at more decodes (Little's law), and the ceiling keeps a replica ahead
of arrivals that the same replica without it falls behind (slidingserve.policy.chunker)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slidingserve.latency.features import (
    F_DECODE_REQS,
    F_PREFILL_TOKENS,
    BatchShape,
    features_of,
    features_of_many,
)
from slidingserve.sim import simulate
from slidingserve.slo import load_tiers
from slidingserve.workload import RequestSpec


class DearDecodes:
    """A step of ``c`` prompt tokens and ``d`` decodes takes 5 ms + 20 us x c + 4 us x d^2."""

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return 0.005 + 2e-5 * X[:, F_PREFILL_TOKENS] + 4e-6 * X[:, F_DECODE_REQS] ** 2

    def predict(self, shape: BatchShape) -> float:
        return float(self.predict_features(features_of(shape)[None, :])[0])

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.predict_features(features_of_many(shapes))


def _late_and_end(overrides: dict) -> tuple[float, float]:
    # 14 req/s of 1,000 prompt and 200 output tokens, one tier (interactive: 6 s TTFT, 50 ms
    # TPOT), 900 requests
    tiers = load_tiers()
    gaps = np.random.default_rng(0).exponential(1.0 / 14.0, 900)
    specs = [RequestSpec(i, float(t), 1000, 200, "interactive")
             for i, t in enumerate(np.cumsum(gaps))]
    result = simulate(specs, tiers, "slidingserve", latency=DearDecodes(), policy_config=overrides)
    ttft = np.array([r.ttft_s for r in result.records])
    return float(np.mean(ttft > tiers["interactive"].ttft_s)), float(result.stats["end_s"])


def test_a_step_ceiling_keeps_up_where_long_steps_fall_behind() -> None:
    late, end = _late_and_end({})
    late_capped, end_capped = _late_and_end({"chunker": {"max_step_s": 0.025}})
    assert late > 0.05  # filled to the TPOT, the steps settle at many, dear decodes
    assert late_capped < late / 3
    assert end_capped < end - 3.0  # the same work done sooner: more tokens a second
