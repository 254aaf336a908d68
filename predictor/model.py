"""The LightGBM latency model behind the ``LatencyModel`` protocol.

  latency(x) = base(x) * exp(trees(x))

``base`` is the non-negative linear cost of ``predictor.baseline``; ``trees`` is the mean model
(LightGBM ``regression`` on log(latency / base)) or the high-quantile model (``quantile``, alpha
from the manifest, P90 by default): ``PredictorConfig.kind`` picks which one the scheduler plans
with. Predictions run on the compiled tables of ``predictor.compiled`` (exactly LightGBM's
output); ``reference_predict_features`` runs LightGBM itself, for tests and checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from predictor.baseline import LinearBase
from predictor.bundle import KINDS, ModelBundle, ModelFormatError, load_bundle
from predictor.compiled import CompiledForest, CompileError
from slidingserve.latency.features import (
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    N_FEATURES,
    BatchShape,
    features_of,
    features_of_many,
    with_prefill_chunks,
)

Kind = Literal["mean", "p90"]
# The features ``with_prefill_chunks`` varies between rows.
_PREFILL_FEATURES = {F_PREFILL_TOKENS, F_PREFILL_REQS, F_PREFILL_ATTN, F_TOTAL_TOKENS}


class PredictorConfig(BaseModel):
    """How the scheduler loads its latency model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_dir: Path
    kind: Kind = "mean"  # "p90": plan conservatively with the high-quantile model

    @field_validator("model_dir")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError(f"model_dir {str(v)!r} is not a directory")
        return v

    def build(self) -> LightGBMLatencyModel:
        return LightGBMLatencyModel.load(self.model_dir, self.kind)


def _booster(text: str, kind: str) -> Any:
    import lightgbm as lgb

    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as e:
        raise ModelFormatError(f"{kind} booster is corrupt: {e}") from e
    if booster.num_feature() != N_FEATURES:
        raise ModelFormatError(
            f"{kind} booster reads {booster.num_feature()} features, schema v"
            f"{FEATURE_SCHEMA_VERSION} has {N_FEATURES}"
        )
    return booster


class LightGBMLatencyModel:
    """A loaded, compiled model of one kind ("mean" or "p90")."""

    def __init__(self, bundle: ModelBundle, kind: Kind = "mean"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)} (got {kind!r})")
        self.bundle = bundle
        self.kind = kind
        self.version = bundle.version
        try:
            self.base = LinearBase.from_json(bundle.base)
        except (KeyError, ValueError) as e:
            raise ModelFormatError(f"model v{bundle.version}: bad linear base: {e}") from e
        self._booster = _booster(bundle.boosters[kind], kind)
        try:
            self.forest = CompiledForest.from_booster(self._booster)
        except CompileError as e:
            raise ModelFormatError(f"model v{bundle.version} {kind} booster: {e}") from e
        self._base_index = self.base.index
        self._base_pairs = list(
            zip(self._base_index.tolist(), self.base.coef.tolist(), strict=True)
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], kind: Kind = "mean") -> LightGBMLatencyModel:
        return cls(load_bundle(path), kind)

    @classmethod
    def from_bytes(cls, blob: bytes, kind: Kind = "mean") -> LightGBMLatencyModel:
        return cls(ModelBundle.from_bytes(blob), kind)

    def check_schema(self, names: Sequence[str], version: int) -> None:
        """Refuse features computed under another schema."""
        b = self.bundle
        if version != b.feature_schema_version or tuple(names) != b.feature_names:
            raise ModelFormatError(
                f"input features are schema v{version} {list(names)}; model v{self.version} "
                f"expects v{self.bundle.feature_schema_version} {list(self.bundle.feature_names)}"
            )

    # ---- the LatencyModel protocol -----------------------------------------------------------
    def predict_features(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != N_FEATURES:
            raise ValueError(
                f"expected features of shape (n, {N_FEATURES}) (schema v{FEATURE_SCHEMA_VERSION}: "
                f"{list(FEATURE_NAMES)}), got {X.shape}"
            )
        if X.shape[0] == 1:
            return np.array([self.predict_row(X[0].tolist())])
        # The base's columns in Fortran order (what the gather gives for a C-ordered X) whatever
        # X's layout, so that the product (and its summation order) is the same for the same values.
        cols = np.asfortranarray(X[:, self._base_index])
        return (self.base.intercept + cols @ self.base.coef) * np.exp(self.forest.predict(X))

    def predict_prefill_chunks(
        self, base: np.ndarray, chunks: np.ndarray, done: float
    ) -> np.ndarray:
        """``predict_features(with_prefill_chunks(base, chunks, done))``, bit for bit, in fewer
        numpy calls (the chunk-size search's hot path): only the prefill features differ between
        rows, so the trees over the other features are looked up once, and the base's columns
        are gathered already in the layout ``predict_features`` multiplies."""
        cols = with_prefill_chunks(base, chunks, done).T  # (N_FEATURES, n), C order
        if cols.shape[1] == 1:
            return np.array([self.predict_row(cols[:, 0].tolist())])
        lin = self.base.intercept + cols[self._base_index].T @ self.base.coef
        return lin * np.exp(self.forest.predict_columns(cols, base.tolist(), _PREFILL_FEATURES))

    def predict_row(self, x: list[float]) -> float:
        """One prediction from a plain list of schema-v1 features (no numpy on this path)."""
        base = self.base.intercept
        for i, c in self._base_pairs:
            base += x[i] * c
        return base * math.exp(self.forest.predict_row(x))

    def predict(self, shape: BatchShape) -> float:
        return self.predict_row(features_of(shape).tolist())

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.predict_features(features_of_many(shapes))

    # ---- checks ------------------------------------------------------------------------------
    def reference_predict_features(self, X: np.ndarray) -> np.ndarray:
        """The same prediction through LightGBM's own ``Booster.predict`` (slow; for tests)."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
        return self.base.predict(X) * np.exp(self._booster.predict(X))
