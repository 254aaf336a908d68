"""The latency model inside the engine, replaced live when a new version is published.

``LiveLatencyModel`` is a ``LatencyModel`` that forwards to the current model; the policy holds
it for its whole life, so swapping the model underneath needs no policy rebuild. Between steps
the scheduler calls ``poll(step)``; every ``check_every`` steps it stats the model directory's
version file (one ``stat`` call) and, when its mtime or size changed, loads the new model. A load
that fails keeps the old model (and logs why): serving never stops for a bad publish.

Model directory formats (``load_model_dir``):

* ``VERSION`` + ``roofline.json``: a ``RooflineModel`` with those ``RooflineConfig`` fields;
* ``VERSION`` + anything the predictor package loads (``predictor.load_latency_model(dir)``).

Publishers write the model files first and the ``VERSION`` file last (atomically, by rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from slidingserve.latency import BatchShape, LatencyModel, RooflineConfig, RooflineModel

log = logging.getLogger(__name__)
VERSION_FILE = "VERSION"
ROOFLINE_FILE = "roofline.json"

Loader = Callable[[Path], LatencyModel]


def load_model_dir(path: Path) -> tuple[LatencyModel, str]:
    """Load the latency model in ``path``; returns (model, version)."""
    version_file = path / VERSION_FILE
    if not version_file.is_file():
        raise FileNotFoundError(f"latency model dir {str(path)!r} has no {VERSION_FILE} file")
    version = version_file.read_text().strip() or "unversioned"
    if (path / ROOFLINE_FILE).is_file():
        fields = json.loads((path / ROOFLINE_FILE).read_text())
        return RooflineModel(RooflineConfig(**fields)), version
    try:
        from predictor import load_latency_model  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ValueError(
            f"latency model dir {str(path)!r}: no {ROOFLINE_FILE} and the predictor package "
            f"offers no loader ({exc})"
        ) from None
    return load_latency_model(path), version


def write_roofline_dir(path: Path, config: RooflineConfig, version: str) -> Path:
    """Publish a roofline model dir (model file first, then VERSION by atomic rename)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ROOFLINE_FILE).write_text(json.dumps(config.model_dump(), indent=2))
    tmp = path / f".{VERSION_FILE}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, path / VERSION_FILE)
    return path


class LiveLatencyModel:
    """A ``LatencyModel`` whose underlying model can be replaced between steps."""

    def __init__(self, model: LatencyModel, version: str, model_dir: Path | None = None,
                 check_every: int = 16):
        if check_every <= 0:
            raise ValueError(f"check_every must be > 0 (got {check_every})")
        self.current = model
        self.version = version
        self.model_dir = model_dir
        self.check_every = check_every
        self.swaps = 0
        self._stamp = self._version_stamp()

    @classmethod
    def from_config(cls, model_dir: Path | None, roofline: dict, check_every: int
                    ) -> LiveLatencyModel:
        if model_dir is None:
            return cls(RooflineModel(RooflineConfig(**roofline)), "roofline-default", None,
                       check_every)
        model, version = load_model_dir(model_dir)
        return cls(model, version, model_dir, check_every)

    def _version_stamp(self) -> tuple[int, int] | None:
        if self.model_dir is None:
            return None
        try:
            st = os.stat(self.model_dir / VERSION_FILE)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def poll(self, step: int) -> bool:
        """Check for a new version every ``check_every`` steps; True when the model changed."""
        if self.model_dir is None or step % self.check_every:
            return False
        stamp = self._version_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            model, version = load_model_dir(self.model_dir)
        except Exception as exc:  # keep serving with the old model
            log.warning("latency model %s: reload failed, keeping %s: %s",
                        self.model_dir, self.version, exc)
            return False
        if version == self.version:
            return False
        log.info("latency model %s: %s -> %s", self.model_dir, self.version, version)
        self.current, self.version = model, version
        self.swaps += 1
        return True

    # -- LatencyModel ----------------------------------------------------------------------
    def predict(self, shape: BatchShape) -> float:
        return self.current.predict(shape)

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.current.predict_many(shapes)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.current.predict_features(X)
