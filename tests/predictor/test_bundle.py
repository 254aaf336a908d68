"""Model directories: atomic versioned writes; corrupt and mismatched files refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predictor_factories import probe_features, trained_bundle

from predictor.bundle import (
    FeatureSchemaError,
    ModelBundle,
    ModelFormatError,
    load_bundle,
    read_version,
    save_bundle,
)
from predictor.model import LightGBMLatencyModel, PredictorConfig
from slidingserve.latency import LatencyModel
from slidingserve.latency.features import FEATURE_NAMES, BatchShape, features_of_many


def _saved(tmp_path: Path, version: int = 1) -> Path:
    return save_bundle(trained_bundle().with_version(version), tmp_path / "model")


def test_round_trip_and_protocol(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        "mean.txt", "metrics.json", "model.json", "p90.txt"
    ]
    metrics = json.loads((path / "metrics.json").read_text())
    assert {"mape", "p90_ape", "n_train", "n_test"} <= set(metrics)
    model = LightGBMLatencyModel.load(path)
    assert isinstance(model, LatencyModel)
    X = probe_features(50)
    np.testing.assert_array_equal(model.predict_features(X), LightGBMLatencyModel(
        trained_bundle()).predict_features(X))
    shapes = [BatchShape(prefill=((64, 0),), decode_ctx=(100, 200)), BatchShape(decode_ctx=(9,))]
    many = model.predict_many(shapes)
    assert many.tolist() == pytest.approx([model.predict(s) for s in shapes], rel=1e-12)
    assert np.all(many > 0)
    np.testing.assert_allclose(many, model.predict_features(features_of_many(shapes)))


def test_p90_model_is_above_mean_mostly(tmp_path: Path) -> None:
    cfg = PredictorConfig(model_dir=_saved(tmp_path), kind="p90")
    high, mean = cfg.build(), LightGBMLatencyModel.load(cfg.model_dir)
    X = probe_features(0)
    assert np.mean(high.predict_features(X) >= mean.predict_features(X)) > 0.8
    with pytest.raises(ValueError, match="kind"):
        PredictorConfig(model_dir=cfg.model_dir, kind="p50")  # type: ignore[arg-type]


def test_versions_and_atomic_replace(tmp_path: Path) -> None:
    path = _saved(tmp_path, 1)
    assert read_version(path) == 1
    save_bundle(trained_bundle().with_version(2), path)
    assert read_version(path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp dirs left behind
    assert read_version(tmp_path / "missing") is None


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.csv").write_text("x")
    with pytest.raises(ModelFormatError, match="not a model directory"):
        save_bundle(trained_bundle(), tmp_path / "data")


def test_corrupt_booster_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    text = (path / "mean.txt").read_text()
    (path / "mean.txt").write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    with pytest.raises(ModelFormatError, match=r"mean\.txt is corrupt"):
        LightGBMLatencyModel.load(path)


def test_truncated_manifest_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    (path / "model.json").write_text((path / "model.json").read_text()[:40])
    with pytest.raises(ModelFormatError, match=r"model\.json is corrupt"):
        load_bundle(path)


def test_feature_schema_mismatch_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    manifest = json.loads((path / "model.json").read_text())
    manifest["feature_schema"]["version"] = 2
    (path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureSchemaError, match="v2"):
        LightGBMLatencyModel.load(path)
    manifest["feature_schema"] = {"version": 1, "names": list(reversed(FEATURE_NAMES))}
    (path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureSchemaError, match="does not match"):
        LightGBMLatencyModel.load(path)


def test_bad_input_refused() -> None:
    model = LightGBMLatencyModel(trained_bundle())
    with pytest.raises(ValueError, match=r"\(n, 7\).*got \(3, 6\)"):
        model.predict_features(np.zeros((3, 6)))
    with pytest.raises(ModelFormatError, match="schema v2"):
        model.check_schema(FEATURE_NAMES, 2)
    model.check_schema(FEATURE_NAMES, 1)


def test_bytes_round_trip_and_corruption() -> None:
    blob = trained_bundle().to_bytes()
    assert ModelBundle.from_bytes(blob).boosters == trained_bundle().boosters
    with pytest.raises(ModelFormatError, match="corrupt"):
        ModelBundle.from_bytes(blob[: len(blob) // 2])
