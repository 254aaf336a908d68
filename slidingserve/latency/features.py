"""Batch shapes and the feature vector every latency model reads.

Schema v1 (column order is part of the schema; bump FEATURE_SCHEMA_VERSION on any change):

  prefill_tokens     sum of prefill chunk sizes
  prefill_reqs       number of prefill chunks in the batch
  decode_reqs        number of decode requests
  decode_ctx_sum     sum of decode context lengths (KV tokens read by decode attention)
  decode_ctx_max     max decode context length (0 when none)
  prefill_attn_work  sum over chunks of chunk * (already_computed + chunk / 2)
  total_tokens       prefill_tokens + decode_reqs

Every feature except ``decode_ctx_max`` is additive over requests, so planners build candidate
batches as ``base + contribution`` with numpy instead of building shapes one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FEATURE_SCHEMA_VERSION = 1
FEATURE_NAMES: tuple[str, ...] = (
    "prefill_tokens",
    "prefill_reqs",
    "decode_reqs",
    "decode_ctx_sum",
    "decode_ctx_max",
    "prefill_attn_work",
    "total_tokens",
)
N_FEATURES = len(FEATURE_NAMES)
(
    F_PREFILL_TOKENS,
    F_PREFILL_REQS,
    F_DECODE_REQS,
    F_DECODE_CTX_SUM,
    F_DECODE_CTX_MAX,
    F_PREFILL_ATTN,
    F_TOTAL_TOKENS,
) = range(N_FEATURES)


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What a latency model needs to know about one engine step."""

    prefill: tuple[tuple[int, int], ...] = ()  # (chunk_tokens, tokens_already_computed) per prefill
    decode_ctx: tuple[int, ...] = ()  # context length (tokens in KV) of each decode request


def features_of(shape: BatchShape) -> np.ndarray:
    """Feature vector (float64, length N_FEATURES) of one batch."""
    x = np.zeros(N_FEATURES, dtype=np.float64)
    for chunk, done in shape.prefill:
        x[F_PREFILL_TOKENS] += chunk
        x[F_PREFILL_ATTN] += chunk * (done + chunk / 2.0)
    x[F_PREFILL_REQS] = len(shape.prefill)
    x[F_DECODE_REQS] = len(shape.decode_ctx)
    if shape.decode_ctx:
        x[F_DECODE_CTX_SUM] = sum(shape.decode_ctx)
        x[F_DECODE_CTX_MAX] = max(shape.decode_ctx)
    x[F_TOTAL_TOKENS] = x[F_PREFILL_TOKENS] + x[F_DECODE_REQS]
    return x


def features_of_many(shapes: Sequence[BatchShape]) -> np.ndarray:
    """Feature matrix (n, N_FEATURES) of many batches."""
    out = np.zeros((len(shapes), N_FEATURES), dtype=np.float64)
    for i, s in enumerate(shapes):
        out[i] = features_of(s)
    return out


def decode_features(decode_ctx: Sequence[int]) -> np.ndarray:
    """Features of a decode-only batch: the base that prefill candidates are added to."""
    x = np.zeros(N_FEATURES, dtype=np.float64)
    if decode_ctx:
        x[F_DECODE_REQS] = len(decode_ctx)
        x[F_DECODE_CTX_SUM] = float(sum(decode_ctx))
        x[F_DECODE_CTX_MAX] = float(max(decode_ctx))
        x[F_TOTAL_TOKENS] = len(decode_ctx)
    return x


def with_prefill_chunks(
    base: np.ndarray, chunks: np.ndarray, done: float | np.ndarray
) -> np.ndarray:
    """Rows of ``base`` plus one prefill chunk each, of size ``chunks[i]`` after ``done`` tokens.

    Vectorised candidate builder for chunk-size searches: returns shape (len(chunks), N_FEATURES).
    A chunk of 0 adds nothing (it is not counted as a prefill request). The matrix is built
    column by column and returned in column-major (Fortran) order: the columns are what the
    latency models read, and contiguous columns are cheaper to write and to read.
    """
    chunks = np.asarray(chunks, dtype=np.float64)
    cols = np.empty((N_FEATURES, len(chunks)), dtype=np.float64)
    cols[:] = np.asarray(base, dtype=np.float64)[:, None]
    cols[F_PREFILL_TOKENS] += chunks
    cols[F_PREFILL_REQS] += chunks > 0
    cols[F_PREFILL_ATTN] += chunks * (np.asarray(done, dtype=np.float64) + chunks / 2.0)
    cols[F_TOTAL_TOKENS] += chunks
    return cols.T
