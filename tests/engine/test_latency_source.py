"""The engine's live latency model: version checks, swaps, and failed publishes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slidingserve.engine.latency_source import LiveLatencyModel, load_model_dir, write_roofline_dir
from slidingserve.latency import BatchShape, RooflineConfig

PREDICTOR_MODEL = Path(__file__).resolve().parents[2] / "predictor/data/cpu_tiny/model"


def test_default_is_a_roofline() -> None:
    live = LiveLatencyModel.from_config(None, {}, 4)
    assert live.version == "roofline-default"
    assert not live.poll(4)
    assert live.predict(BatchShape(decode_ctx=(100,))) > 0


def test_new_version_is_loaded_only_at_check_steps(tmp_path: Path) -> None:
    d = write_roofline_dir(tmp_path / "m", RooflineConfig(), "a")
    live = LiveLatencyModel.from_config(d, {}, check_every=4)
    shape = BatchShape(prefill=((256, 0),))
    before = live.predict(shape)
    write_roofline_dir(d, RooflineConfig(overhead_s=1.0), "b")
    assert not live.poll(3)  # not a check step
    assert live.version == "roofline-a"
    assert live.poll(4)
    assert live.version == "roofline-b" and live.swaps == 1
    assert live.predict(shape) == pytest.approx(before + 1.0 - RooflineConfig().overhead_s)
    assert not live.poll(8)  # unchanged since


def test_a_broken_publish_keeps_the_old_model(tmp_path: Path) -> None:
    d = write_roofline_dir(tmp_path / "m", RooflineConfig(), "a")
    live = LiveLatencyModel.from_config(d, {}, check_every=1)
    (d / "roofline.json").write_text("{not json")
    (d / "VERSION").write_text("b\n")
    assert not live.poll(1)
    assert live.version == "roofline-a"
    assert live.predict_features(np.zeros((2, 7))).shape == (2,)


def test_missing_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds neither"):
        load_model_dir(tmp_path)


@pytest.mark.skipif(not PREDICTOR_MODEL.is_dir(), reason="no trained CPU predictor in the repo")
def test_predictor_model_dir_swaps_by_directory_rename(tmp_path: Path) -> None:
    d = tmp_path / "model"
    shutil.copytree(PREDICTOR_MODEL, d)
    live = LiveLatencyModel.from_config(d, {}, check_every=1)
    assert live.version.startswith("lgbm-v")
    from predictor.bundle import load_bundle, save_bundle

    bundle = load_bundle(d)
    save_bundle(bundle.with_version(bundle.version + 1), d)  # atomic directory swap
    assert live.poll(1)
    assert live.version == f"lgbm-v{bundle.version + 1}"
    assert live.predict(BatchShape(decode_ctx=(64,) * 8)) > 0


class _Constant:
    """A latency model that always predicts ``value`` seconds (what the correction scales)."""

    def __init__(self, value: float):
        self.value = value

    def predict(self, shape: BatchShape) -> float:
        return self.value

    def predict_many(self, shapes: list[BatchShape]) -> np.ndarray:
        return np.full(len(shapes), self.value)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.value)


def _run_steps(live: LiveLatencyModel, measured_s: float, steps: int) -> None:
    for _ in range(steps):
        live.observe(float(live.predict_features(np.zeros((1, 7)))[0]), measured_s)


def test_online_correction_converges_to_the_measured_ratio() -> None:
    live = LiveLatencyModel(_Constant(0.010), "const", correction_decay=0.9)
    _run_steps(live, 0.013, 200)  # steps run 1.3x the model
    assert live.scale == pytest.approx(1.3, rel=1e-3)
    assert live.predict(BatchShape(decode_ctx=(10,))) == pytest.approx(0.013, rel=1e-3)
    _run_steps(live, 0.010, 200)  # the engine speeds up again
    assert live.scale == pytest.approx(1.0, rel=1e-3)


def test_online_correction_is_bounded_and_can_be_off() -> None:
    live = LiveLatencyModel(_Constant(0.010), "const", correction_decay=0.5, max_scale=2.0)
    _run_steps(live, 10.0, 100)  # a stall 1000x the prediction
    assert live.scale == pytest.approx(2.0)
    off = LiveLatencyModel(_Constant(0.010), "const")
    _run_steps(off, 0.05, 10)
    assert off.scale == 1.0
    with pytest.raises(ValueError, match="correction_decay"):
        LiveLatencyModel(_Constant(0.010), "const", correction_decay=1.0)


def test_a_new_version_resets_the_correction(tmp_path: Path) -> None:
    d = write_roofline_dir(tmp_path / "m", RooflineConfig(), "a")
    live = LiveLatencyModel.from_config(d, {}, 1, correction_decay=0.5)
    _run_steps(live, 1.0, 20)
    assert live.scale > 1.5
    write_roofline_dir(d, RooflineConfig(overhead_s=0.5), "b")
    assert live.poll(1)
    assert live.scale == 1.0


def test_host_time_is_learned_added_to_predictions_and_kept_out_of_the_scale() -> None:
    live = LiveLatencyModel(_Constant(0.010), "const", correction_decay=0.9)
    for _ in range(200):
        live.observe_host(0.002)
    assert live.host_s == pytest.approx(0.002, rel=1e-6)
    assert live.predict(BatchShape(decode_ctx=(10,))) == pytest.approx(0.012)
    _run_steps(live, 0.010, 50)  # the forward passes run as modelled: the scale stays 1
    assert live.scale == pytest.approx(1.0)
    live.observe_host(5.0)  # an idle gap is clipped, not taken as overhead
    assert live.host_s <= 0.9 * 0.002 + 0.1 * 0.1 + 1e-12
    off = LiveLatencyModel(_Constant(0.010), "const")
    off.observe_host(0.002)
    assert off.host_s == 0.0
    with pytest.raises(ValueError, match="host_s"):
        LiveLatencyModel(_Constant(0.010), "const", host_s=-1.0)
