"""Analytic roofline latency model.

Step time = fixed overhead + max(compute time, memory time), where

  compute = (2 * params * total_tokens + attention FLOPs) / (peak_flops * mfu)
  memory  = (weight bytes + KV bytes read + KV bytes written) / (hbm_bw * mbu)

Attention FLOPs: 4 * layers * q_heads * head_dim per (query, key) pair; prefill chunks see
``prefill_attn_work`` pairs (causal, so chunk * (done + chunk/2)), decodes see their context.
Defaults: a Llama-3-8B-class model (32 layers, hidden 4096, 32 query / 8 KV heads of 128,
8.0e9 parameters, bf16) on one H100 SXM (989 TFLOP/s dense bf16, 3.35 TB/s HBM3), with
efficiency factors mfu = 0.55 (achieved fraction of peak FLOPs in large GEMMs) and
mbu = 0.75 (achieved fraction of HBM bandwidth), and 4 ms of per-step overhead (CPU-side
scheduling, sampling and kernel launches), in line with published vLLM step timings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slidingserve.latency.features import (
    F_DECODE_CTX_SUM,
    F_PREFILL_ATTN,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    BatchShape,
    features_of,
    features_of_many,
)


class RooflineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_layers: int = Field(default=32, gt=0)
    hidden_size: int = Field(default=4096, gt=0)
    num_q_heads: int = Field(default=32, gt=0)
    num_kv_heads: int = Field(default=8, gt=0)
    head_dim: int = Field(default=128, gt=0)
    num_params: float = Field(default=8.0e9, gt=0)
    bytes_per_param: float = Field(default=2.0, gt=0)
    peak_flops: float = Field(default=989e12, gt=0)
    hbm_bytes_per_s: float = Field(default=3.35e12, gt=0)
    mfu: float = Field(default=0.55, gt=0, le=1)
    mbu: float = Field(default=0.75, gt=0, le=1)
    overhead_s: float = Field(default=0.004, ge=0)


class RooflineModel:
    """Roofline estimate of one step's time from its batch features."""

    def __init__(self, config: RooflineConfig | None = None):
        c = self.config = config or RooflineConfig()
        self._weight_bytes = c.num_params * c.bytes_per_param
        self._kv_bytes_per_token = (
            2 * c.num_layers * c.num_kv_heads * c.head_dim * c.bytes_per_param
        )
        self._attn_flops_per_pair = 4 * c.num_layers * c.num_q_heads * c.head_dim
        self._flops_rate = c.peak_flops * c.mfu
        self._bytes_rate = c.hbm_bytes_per_s * c.mbu

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[0] == 1:  # one step (hosts timing a plan): plain floats, the same arithmetic
            return np.array([self.predict_row(X[0].tolist())])
        c = self.config
        tokens, attn = X[:, F_PREFILL_TOKENS], X[:, F_PREFILL_ATTN]
        ctx, total = X[:, F_DECODE_CTX_SUM], X[:, F_TOTAL_TOKENS]
        flops = 2.0 * c.num_params * total + self._attn_flops_per_pair * (attn + ctx)
        kv_read = ctx + attn / np.maximum(tokens, 1.0)
        bytes_moved = self._weight_bytes + self._kv_bytes_per_token * (kv_read + total)
        return c.overhead_s + np.maximum(flops / self._flops_rate, bytes_moved / self._bytes_rate)

    def predict_row(self, x: list[float]) -> float:
        """``predict_features`` of one feature row given as a list (no numpy on this path)."""
        c = self.config
        tokens, attn = x[F_PREFILL_TOKENS], x[F_PREFILL_ATTN]
        ctx, total = x[F_DECODE_CTX_SUM], x[F_TOTAL_TOKENS]
        flops = 2.0 * c.num_params * total + self._attn_flops_per_pair * (attn + ctx)
        kv_read = ctx + attn / max(tokens, 1.0)
        bytes_moved = self._weight_bytes + self._kv_bytes_per_token * (kv_read + total)
        return c.overhead_s + max(flops / self._flops_rate, bytes_moved / self._bytes_rate)

    def predict(self, shape: BatchShape) -> float:
        return float(self.predict_features(features_of(shape)[None, :])[0])

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.predict_features(features_of_many(shapes))
