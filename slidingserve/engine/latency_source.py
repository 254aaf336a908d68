"""The latency model inside the engine, replaced live when a new version is published.

``LiveLatencyModel`` is a ``LatencyModel`` that forwards to the current model; the policy holds
it for its whole life, so swapping the model underneath needs no policy rebuild. Between steps
the scheduler calls ``poll(step)``; every ``check_every`` steps it stats the model directory's
version file (one ``stat`` call) and, when its mtime or size changed, loads the new model. A load
that fails keeps the old model (and logs why): serving never stops for a bad publish.

Model directory formats (``load_model_dir``):

* the predictor's LightGBM model directory (``model.json`` manifest with a monotonic version;
  published by replacing the whole directory atomically, ``predictor.bundle.save_bundle``);
* ``VERSION`` + ``roofline.json``: a ``RooflineModel`` with those ``RooflineConfig`` fields
  (written model first, ``VERSION`` last by rename: ``write_roofline_dir``).

The stamp is (inode, mtime, size) of ``model.json`` (else ``VERSION``), so both a directory
swap and an in-place rewrite are seen.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slidingserve.latency import BatchShape, LatencyModel, RooflineConfig, RooflineModel

log = logging.getLogger(__name__)
VERSION_FILE = "VERSION"
MANIFEST_FILE = "model.json"  # predictor.bundle.MANIFEST
ROOFLINE_FILE = "roofline.json"



def load_model_dir(path: Path) -> tuple[LatencyModel, str]:
    """Load the latency model in ``path``; returns (model, version)."""
    if (path / MANIFEST_FILE).is_file():
        from predictor.model import LightGBMLatencyModel

        model = LightGBMLatencyModel.load(path)
        return model, f"lgbm-v{model.version}"
    version_file = path / VERSION_FILE
    if version_file.is_file() and (path / ROOFLINE_FILE).is_file():
        version = version_file.read_text().strip() or "unversioned"
        fields = json.loads((path / ROOFLINE_FILE).read_text())
        return RooflineModel(RooflineConfig(**fields)), f"roofline-{version}"
    raise FileNotFoundError(
        f"latency model dir {str(path)!r} holds neither a predictor model ({MANIFEST_FILE}) "
        f"nor {VERSION_FILE} + {ROOFLINE_FILE}"
    )


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

    def _version_stamp(self) -> tuple[int, int, int] | None:
        if self.model_dir is None:
            return None
        for name in (MANIFEST_FILE, VERSION_FILE):
            try:
                st = os.stat(self.model_dir / name)
            except OSError:
                continue
            return st.st_ino, st.st_mtime_ns, st.st_size
        return None

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
