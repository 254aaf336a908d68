"""Batch features of a plan, for predicting its step time with a ``LatencyModel``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import (
    F_DECODE_CTX_MAX,
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    N_FEATURES,
)
from slidingserve.policy.types import RequestView, SchedulerInput


def is_decode(req: RequestView, num_tokens: int) -> bool:
    """A one-token step of a request with one pending token is a decode; all else is prefill."""
    return num_tokens == 1 and req.remaining_prefill <= 1


def decode_context(req: RequestView) -> int:
    """KV tokens the decode attends to (what it holds plus the token it writes)."""
    return req.num_computed + 1


def step_features(items: Iterable[tuple[RequestView, int]]) -> np.ndarray:
    """Feature vector (schema v1) of a step running ``num_tokens`` of each request."""
    # Plain Python sums (the same float additions, in the same order, as numpy's scalar ones).
    prefill_tokens = prefill_reqs = decode_reqs = decode_ctx_sum = ctx_max = 0
    prefill_attn = 0.0
    for req, n in items:
        if n == 1 and req.prompt_len + req.num_generated - req.num_computed <= 1:  # is_decode
            ctx = req.num_computed + 1  # decode_context
            decode_reqs += 1
            decode_ctx_sum += ctx
            ctx_max = max(ctx_max, ctx)
        else:
            prefill_tokens += n
            prefill_reqs += 1
            prefill_attn += n * (req.num_computed + n / 2.0)
    x = np.zeros(N_FEATURES, dtype=np.float64)
    x[F_PREFILL_TOKENS] = prefill_tokens
    x[F_PREFILL_REQS] = prefill_reqs
    x[F_DECODE_REQS] = decode_reqs
    x[F_DECODE_CTX_SUM] = decode_ctx_sum
    x[F_DECODE_CTX_MAX] = ctx_max
    x[F_PREFILL_ATTN] = prefill_attn
    x[F_TOTAL_TOKENS] = x[F_PREFILL_TOKENS] + x[F_DECODE_REQS]
    return x


def predict_plan(
    latency: LatencyModel, state: SchedulerInput, scheduled: Sequence[tuple[int, int]]
) -> float:
    """Predicted time of the step ``scheduled`` (0.0 for an empty step)."""
    if not scheduled:
        return 0.0
    by_key = {r.key: r for r in state.running}
    by_key.update((r.key, r) for r in state.waiting)
    x = step_features((by_key[k], n) for k, n in scheduled)
    return float(latency.predict_features(x[None, :])[0])
