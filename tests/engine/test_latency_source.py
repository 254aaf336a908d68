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
