"""Binned linear step-time models; the ``qoserve-a100`` preset.

QoServe (published as Niyama) plans and reports with two linear models of one step's time,
split by the step's total tokens ``T = P + D`` (``DeadlineScheduler._predict_batch_time`` on the
``niyama_asplos2026`` branch of microsoft/sarathi-serve; Llama-3-8B on one A100 80 GB):

    time = intercept + c_T * T + c_P * P + c_D * D + c_DC * DC + c_PC * PC

with P prefill tokens, D decode tokens, DC the sum of the decodes' context lengths (tokens in
KV before the step) and PC the sum, over the step's prefill chunks, of the tokens already
computed for that request before the chunk. The first bin with ``T <= upper`` applies.

Mapping from the feature schema (``slidingserve.latency.features``): P, D and T are columns;
DC = ``decode_ctx_sum - decode_reqs`` (the schema counts the token each decode writes);
PC is recovered from ``prefill_attn_work = sum c_i * (done_i + c_i / 2)``: exactly when the
step holds one prefill chunk (PC = work / P - P / 2), and as if its n chunks were of equal
size otherwise (PC = n * work / P - P / 2, floored at 0). On the QoServe protocol's steps
(1,500 ShareGPT requests at 1.5 req/s) 6-16% of the steps hold several chunks; there the
estimate's step time is 1.1-2.5% off the exact PC's on average, 0.1-0.3% over all steps, and
the total simulated busy time differs by at most 0.15% (fcfs-256, edf-256, qoserve-paper,
slidingserve; docs/results.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidingserve.latency.features import (
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    BatchShape,
    features_of,
    features_of_many,
)


class LinearBin(BaseModel):
    """One linear model, used for steps of at most ``upper`` total tokens (None: no bound)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    upper: int | None = Field(default=None, ge=1)
    intercept: float
    tokens: float = 0.0  # per token of the step (T)
    prefill_tokens: float = 0.0  # per prefill token (P)
    decode_tokens: float = 0.0  # per decode token (D)
    decode_context: float = 0.0  # per token of decode context (DC)
    prefill_context: float = 0.0  # per token already computed before a prefill chunk (PC)


class BinnedLinearConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "linear"
    bins: tuple[LinearBin, ...] = Field(min_length=1)
    min_step_s: float = Field(default=1e-4, gt=0)  # floor: predictions stay strictly positive

    @model_validator(mode="after")
    def _ordered(self) -> BinnedLinearConfig:
        uppers = [b.upper for b in self.bins]
        if uppers[-1] is not None or any(u is None for u in uppers[:-1]):
            raise ValueError(f"bins: only the last bin may be unbounded (got uppers {uppers})")
        bounded = [u for u in uppers if u is not None]
        if bounded != sorted(set(bounded)):
            raise ValueError(f"bins: upper bounds must increase (got {bounded})")
        return self


# Niyama's coefficients for Llama-3-8B on an A100 80 GB (FlashInfer), as published.
QOSERVE_A100 = BinnedLinearConfig(
    name="qoserve-a100",
    bins=(
        LinearBin(
            upper=512,
            intercept=0.014936,
            tokens=5.882475e-05,
            prefill_tokens=2.247956e-05,
            decode_tokens=3.634519e-05,
            decode_context=1.111258e-07,
            prefill_context=7.554773e-07,
        ),
        LinearBin(
            upper=None,
            intercept=0.005004,
            tokens=2.719050e-05,
            prefill_tokens=6.863043e-05,
            decode_tokens=-4.143993e-05,
            decode_context=1.663409e-07,
            prefill_context=2.727223e-06,
        ),
    ),
)


class BinnedLinearModel:
    """A ``LatencyModel`` of binned linear terms (module docstring)."""

    def __init__(self, config: BinnedLinearConfig = QOSERVE_A100):
        self.config = config
        self.name = config.name
        b = config.bins
        self._uppers = np.array([x.upper if x.upper is not None else np.inf for x in b])
        self._coef = np.array(
            [
                [x.intercept, x.tokens, x.prefill_tokens, x.decode_tokens, x.decode_context,
                 x.prefill_context]
                for x in b
            ]
        )

    def terms(self, X: np.ndarray) -> np.ndarray:
        """(n, 6) matrix of [1, T, P, D, DC, PC] per row."""
        P, D, T = X[:, F_PREFILL_TOKENS], X[:, F_DECODE_REQS], X[:, F_TOTAL_TOKENS]
        n_chunks, work = X[:, F_PREFILL_REQS], X[:, F_PREFILL_ATTN]
        with np.errstate(divide="ignore", invalid="ignore"):
            pc = np.where(P > 0, n_chunks * work / np.where(P > 0, P, 1.0) - P / 2.0, 0.0)
        return np.column_stack(
            [np.ones(len(X)), T, P, D, X[:, F_DECODE_CTX_SUM] - D, np.maximum(pc, 0.0)]
        )

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        rows = np.searchsorted(self._uppers, X[:, F_TOTAL_TOKENS], side="left")
        out = np.einsum("ij,ij->i", self.terms(X), self._coef[rows])
        return np.maximum(out, self.config.min_step_s)

    def predict(self, shape: BatchShape) -> float:
        return float(self.predict_features(features_of(shape)[None, :])[0])

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.predict_features(features_of_many(shapes))
