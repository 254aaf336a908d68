"""Training and held-out evaluation of the latency model, with its baselines.

``train_model`` splits a step trace (seeded), fits the linear base and the two LightGBM models
(mean and high quantile) on the training part, and measures on the held-out part:

  mape      mean absolute percentage error of the mean model, as a fraction (0.05 = 5 %)
  p90_ape   90th percentile of its absolute percentage errors
  p90       the quantile model: its coverage (share of steps at or under the prediction) and MAPE
  linear    ordinary least squares on the same 7 features (clipped at 1 us)
  base      the non-negative linear base alone
  roofline  slidingserve.latency.RooflineModel as configured (an H100 Llama-3-8B), and the same
            roofline calibrated to this data (fitted overhead and time scale)
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from predictor.baseline import LinearBase
from predictor.bundle import ModelBundle
from predictor.model import LightGBMLatencyModel
from predictor.steptrace import PROVENANCE_COLUMNS, StepTrace
from slidingserve.latency import RooflineModel
from slidingserve.latency.features import FEATURE_NAMES

DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("prefill_tokens", "prefill_reqs", "prefill_attn_work"),
    ("decode_reqs", "decode_ctx_sum", "decode_ctx_max"),
    ("total_tokens",),
)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    num_boost_round: int = Field(default=300, gt=0)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=15, ge=2)
    min_data_in_leaf: int = Field(default=10, ge=1)
    max_bin: int = Field(default=63, ge=4, le=255)
    quantile: float = Field(default=0.9, gt=0.5, lt=1)
    # features a single tree may combine (LightGBM interaction constraints); keeps the
    # compiled tables small. Every feature must be in exactly one group.
    groups: tuple[tuple[str, ...], ...] = DEFAULT_GROUPS

    @field_validator("groups")
    @classmethod
    def _partition(cls, v: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        flat = [f for g in v for f in g]
        unknown = sorted(set(flat) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; features are {list(FEATURE_NAMES)}")
        if sorted(flat) != sorted(FEATURE_NAMES):
            got = [list(g) for g in v]
            raise ValueError(f"groups must use every feature exactly once (got {got})")
        return v


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 10:
        raise ValueError(f"need at least 10 steps to train and hold out (got {n})")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def ape(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y) / y


def error_summary(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    e = ape(pred, y)
    return {"mape": float(e.mean()), "p90_ape": float(np.quantile(e, 0.9))}


def _lgb_params(config: TrainConfig, objective: str) -> dict[str, Any]:
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "max_bin": config.max_bin,
        "use_missing": False,
        "interaction_constraints": [[index[f] for f in g] for g in config.groups],
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbose": -1,
    }
    if objective == "quantile":
        params["alpha"] = config.quantile
    return params


def coverage_of(trace: StepTrace) -> dict[str, int]:
    """The range of work a model was fitted on: beyond it, its base extrapolates (a model
    fitted on short prompts only can be off several-fold on long chunks; the validation gate
    of ``predictor.service`` reads this)."""
    X = trace.X
    return {
        "steps": len(trace),
        "max_prefill_tokens": int(X[:, FEATURE_NAMES.index("prefill_tokens")].max(initial=0)),
        "max_decode_reqs": int(X[:, FEATURE_NAMES.index("decode_reqs")].max(initial=0)),
    }


def fit_bundle(train: StepTrace, config: TrainConfig, version: int = 1) -> ModelBundle:
    """Fit the base and both boosters on ``train``; metrics hold only its ``coverage``."""
    import lightgbm as lgb

    base = LinearBase.fit(train.X, train.latency_s)
    target = np.log(train.latency_s / base.predict(train.X))
    boosters = {}
    for kind, objective in (("mean", "regression"), ("p90", "quantile")):
        data = lgb.Dataset(
            train.X, target, feature_name=list(FEATURE_NAMES), free_raw_data=False
        )
        booster = lgb.train(_lgb_params(config, objective), data, config.num_boost_round)
        boosters[kind] = booster.model_to_string()
    return ModelBundle(
        version=version,
        base=base.to_json(),
        boosters=boosters,
        metrics={"coverage": coverage_of(train)},
        data_hash=train.data_hash(),
        quantile=config.quantile,
        provenance=_provenance(train),
    )


def _provenance(trace: StepTrace) -> dict[str, str]:
    out = {}
    for col in PROVENANCE_COLUMNS:
        counts = Counter(trace.provenance[col].tolist())
        out[col] = ",".join(str(v) for v, _ in counts.most_common())
    return out


def _calibrated_roofline(train: StepTrace, test: StepTrace) -> np.ndarray:
    """Roofline shape, with overhead and time scale refitted on ``train`` (relative LSQ)."""
    roof = RooflineModel()
    over = roof.config.overhead_s
    r_train = roof.predict_features(train.X) - over
    w = 1.0 / train.latency_s
    A = np.column_stack([np.ones_like(r_train), r_train]) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(A, train.latency_s * w, rcond=None)
    return a + b * (roof.predict_features(test.X) - over)


def baselines(train: StepTrace, test: StepTrace) -> dict[str, dict[str, float]]:
    from sklearn.linear_model import LinearRegression

    y = test.latency_s
    lin = LinearRegression().fit(train.X, train.latency_s)
    return {
        "linear": error_summary(np.maximum(lin.predict(test.X), 1e-6), y),
        "base": error_summary(LinearBase.fit(train.X, train.latency_s).predict(test.X), y),
        "roofline": error_summary(RooflineModel().predict_features(test.X), y),
        "roofline_calibrated": error_summary(
            np.maximum(_calibrated_roofline(train, test), 1e-6), y
        ),
    }


def evaluate(bundle: ModelBundle, test: StepTrace) -> dict[str, Any]:
    y = test.latency_s
    mean = LightGBMLatencyModel(bundle, "mean").predict_features(test.X)
    high = LightGBMLatencyModel(bundle, "p90").predict_features(test.X)
    return {
        **error_summary(mean, y),
        "p90": {**error_summary(high, y), "coverage": float(np.mean(y <= high))},
    }


def train_model(trace: StepTrace, config: TrainConfig, version: int = 1) -> ModelBundle:
    """Split, fit, evaluate; returns the bundle with its metrics filled in."""
    started = time.perf_counter()
    train_idx, test_idx = split_indices(len(trace), config.test_fraction, config.seed)
    train, test = trace.subset(train_idx), trace.subset(test_idx)
    bundle = fit_bundle(train, config, version)
    metrics = {
        **bundle.metrics,
        **evaluate(bundle, test),
        "n_train": len(train),
        "n_test": len(test),
        "baselines": baselines(train, test),
        "data_hash_all": trace.data_hash(),
        "train_seconds": round(time.perf_counter() - started, 3),
        "config": config.model_dump(mode="json"),
    }
    return ModelBundle(
        version=bundle.version,
        base=bundle.base,
        boosters=bundle.boosters,
        metrics=metrics,
        data_hash=bundle.data_hash,
        quantile=bundle.quantile,
        provenance=bundle.provenance,
    )
