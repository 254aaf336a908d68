"""The physical base of the latency model: a non-negative linear cost of the step's work.

  base(x) = c0 + c1 * total_tokens + c2 * prefill_attn_work + c3 * decode_ctx_sum
               + c4 * prefill_reqs + c5 * decode_reqs

(fixed overhead, dense FLOPs per token, prefill attention pairs, decode KV reads, per-request
costs). The coefficients are fitted by non-negative least squares on the relative error (rows
weighted by 1 / latency), so the base stays positive and extrapolates sensibly beyond the
profiled range. The LightGBM trees then learn ``log(latency / base)``: multiplicative
corrections for what the linear form misses (kernel choice, cache effects, padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from slidingserve.latency.features import FEATURE_NAMES

BASE_TERMS: tuple[str, ...] = (
    "total_tokens",
    "prefill_attn_work",
    "decode_ctx_sum",
    "prefill_reqs",
    "decode_reqs",
)
MIN_OVERHEAD_S = 1e-6  # keeps base(x) > 0 for an empty batch


@dataclass(frozen=True)
class LinearBase:
    """``intercept + X[:, term_index] @ coef``, with every coefficient >= 0."""

    terms: tuple[str, ...]
    intercept: float
    coef: np.ndarray

    def __post_init__(self) -> None:
        unknown = [t for t in self.terms if t not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"base terms {unknown} are not features of schema {FEATURE_NAMES}")
        if len(self.coef) != len(self.terms):
            raise ValueError(f"{len(self.coef)} coefficients for {len(self.terms)} base terms")
        if not (self.intercept > 0 and np.all(self.coef >= 0) and np.all(np.isfinite(self.coef))):
            raise ValueError(
                f"base needs intercept > 0 and finite coef >= 0 (got {self.intercept!r}, "
                f"{self.coef.tolist()})"
            )

    @property
    def index(self) -> np.ndarray:
        return np.array([FEATURE_NAMES.index(t) for t in self.terms], dtype=np.int64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + X[:, self.index] @ self.coef

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, terms: tuple[str, ...] = BASE_TERMS) -> LinearBase:
        idx = [FEATURE_NAMES.index(t) for t in terms]
        A = np.column_stack([np.ones(len(y)), X[:, idx]])
        scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # conditioning
        w = 1.0 / y
        sol, _ = nnls((A / scale) * w[:, None], y * w)
        sol = sol / scale
        return cls(terms, max(float(sol[0]), MIN_OVERHEAD_S), np.asarray(sol[1:], dtype=np.float64))

    def to_json(self) -> dict[str, object]:
        return {"terms": list(self.terms), "intercept": self.intercept, "coef": self.coef.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> LinearBase:
        terms = d["terms"]
        coef = d["coef"]
        intercept = d["intercept"]
        if not isinstance(terms, list) or not isinstance(coef, list):
            raise ValueError(f"base: terms and coef must be lists (got {terms!r}, {coef!r})")
        if not isinstance(intercept, int | float):
            raise ValueError(f"base: intercept must be a number (got {intercept!r})")
        names = tuple(str(t) for t in terms)
        return cls(names, float(intercept), np.asarray(coef, dtype=np.float64))
