"""The compiled fast path reproduces LightGBM's own predictions exactly."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from predictor_factories import probe_features, trained_bundle

from predictor.compiled import CompiledForest, CompileError
from predictor.model import LightGBMLatencyModel


def _threshold_rows(forest: CompiledForest, n_features: int) -> np.ndarray:
    """Rows whose features sit exactly on split thresholds (the '<=' edge cases)."""
    rows = []
    for tab in forest.tables:
        for axis, f in enumerate(tab.features):
            for thr in tab.thresholds[axis]:
                x = np.zeros(n_features)
                x[f] = thr
                rows.append(x)
    return np.array(rows)


@pytest.mark.parametrize("kind", ["mean", "p90"])
def test_compiled_equals_lightgbm_on_real_model(kind: str) -> None:
    model = LightGBMLatencyModel(trained_bundle(), kind)  # type: ignore[arg-type]
    booster = lgb.Booster(model_str=trained_bundle().boosters[kind])
    X = np.vstack([probe_features(500), _threshold_rows(model.forest, 7)])
    raw = booster.predict(X)
    np.testing.assert_allclose(model.forest.predict(X), raw, rtol=0, atol=1e-12)
    for x, want in zip(X[:300], raw[:300], strict=True):
        assert model.forest.predict_row(x.tolist()) == pytest.approx(want, abs=1e-12)
    # the full model: base * exp(trees), fast path vs LightGBM path, batch and single rows
    np.testing.assert_allclose(
        model.predict_features(X), model.reference_predict_features(X), rtol=1e-12
    )
    np.testing.assert_allclose(
        model.predict_features(X[:1]), model.reference_predict_features(X[:1]), rtol=1e-12
    )


def test_compiled_equals_lightgbm_without_interaction_constraints() -> None:
    rng = np.random.default_rng(1)
    X = rng.integers(0, 50, size=(2000, 4)).astype(float)
    y = X[:, 0] * X[:, 1] - 3 * X[:, 2] + np.sin(X[:, 3]) + rng.normal(size=2000)
    params = {"objective": "regression", "num_leaves": 7, "max_bin": 15, "verbose": -1,
              "use_missing": False}
    booster = lgb.train(params, lgb.Dataset(X, y), 40)
    forest = CompiledForest.from_booster(booster)
    Xt = np.vstack([rng.integers(-5, 60, size=(400, 4)).astype(float), _threshold_rows(forest, 4)])
    np.testing.assert_allclose(forest.predict(Xt), booster.predict(Xt), rtol=0, atol=1e-10)


def test_missing_value_splits_refused() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    X[::7, 0] = np.nan
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, X[:, 1]), 5)
    with pytest.raises(CompileError, match="missing_type"):
        CompiledForest.from_booster(booster)


def test_oversized_table_refused() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 3))
    y = X.prod(axis=1)
    booster = lgb.train({"objective": "regression", "verbose": -1, "use_missing": False,
                         "num_leaves": 31}, lgb.Dataset(X, y), 50)
    with pytest.raises(CompileError, match="cells"):
        CompiledForest.from_booster(booster, max_table_cells=1000)
