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

Online correction. A model trained on one engine's profile is biased on another process layout
(measured: serving steps here run 1.3x the profiled ones, with the client's output processing
sharing the cores). After every step the scheduler reports the step's prediction and its measured
latency (``observe``); the model keeps an exponential moving average of ``log(measured /
uncorrected prediction)`` and multiplies every prediction by ``scale = exp(average)``, clipped to
``[1 / max_scale, max_scale]``. A new model version starts again from ``scale = 1`` (it was
trained on recent steps). ``correction_decay = 0`` turns the correction off.

Host time. A request's token comes a little after the forward pass that computed it: the
scheduler plans the step before the pass and the engine processes its output after it (on the
CPU engine 0.5-2 ms a step, against steps of 3-20 ms). With the correction on, the model also
keeps an exponential moving average (same decay) of that host time, measured per step as the
time from one ``schedule()`` to the next minus the step's forward pass while the engine stays
busy (``observe_host``), and adds it to every prediction (``latency.StepOverhead``'s rule), so
that a step sized to a decode's slack ends within it. ``observe`` compares the forward pass
alone with the prediction less that host time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slidingserve.latency import BatchShape, LatencyModel, RooflineConfig, RooflineModel
from slidingserve.latency.named import SHIPPED_MODEL_DIRS

log = logging.getLogger(__name__)
VERSION_FILE = "VERSION"
MANIFEST_FILE = "model.json"  # predictor.bundle.MANIFEST
ROOFLINE_FILE = "roofline.json"
COLD_START_FILE = "COLD_START"  # beside a predictor model: a copy a replica started from
MAX_HOST_S = 0.1  # host time per step above this is an idle gap, not overhead (clipped)


def resolve_model_dir(spec: str) -> Path:
    """A predictor model directory from a path or a shipped model's name
    (``latency.named.SHIPPED_MODEL_DIRS``); ValueError naming the value when it holds no
    predictor model."""
    path = SHIPPED_MODEL_DIRS.get(spec, Path(spec))
    if not (path / MANIFEST_FILE).is_file():
        raise ValueError(f"latency model {spec!r}: no predictor model ({MANIFEST_FILE}) in "
                         f"{str(path)!r} (shipped: {', '.join(SHIPPED_MODEL_DIRS)})")
    return path


def load_model_dir(path: Path) -> tuple[LatencyModel, str]:
    """Load the latency model in ``path``; returns (model, version)."""
    if (path / MANIFEST_FILE).is_file():
        from predictor.model import LightGBMLatencyModel

        model = LightGBMLatencyModel.load(path)
        # a cold-start copy is named apart, so that a published model of the same version
        # number still counts as new
        prefix = "cold-start-" if (path / COLD_START_FILE).is_file() else ""
        return model, f"{prefix}lgbm-v{model.version}"
    version_file = path / VERSION_FILE
    if version_file.is_file() and (path / ROOFLINE_FILE).is_file():
        version = version_file.read_text().strip() or "unversioned"
        fields = json.loads((path / ROOFLINE_FILE).read_text())
        return RooflineModel(RooflineConfig(**fields)), f"roofline-{version}"
    raise FileNotFoundError(
        f"latency model dir {str(path)!r} holds neither a predictor model ({MANIFEST_FILE}) "
        f"nor {VERSION_FILE} + {ROOFLINE_FILE}"
    )


def write_cold_start_dir(path: Path, spec: str) -> Path:
    """Put a copy of the predictor model ``spec`` (see ``resolve_model_dir``) at ``path``,
    replacing what is there, marked as a cold start."""
    source = resolve_model_dir(spec)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(source, path)
    (path / COLD_START_FILE).write_text(spec + "\n")
    return path


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
                 check_every: int = 16, correction_decay: float = 0.0, max_scale: float = 4.0,
                 initial_scale: float = 1.0, host_s: float = 0.0):
        if check_every <= 0:
            raise ValueError(f"check_every must be > 0 (got {check_every})")
        if not 0.0 <= correction_decay < 1.0:
            raise ValueError(f"correction_decay must be in [0, 1) (got {correction_decay})")
        if max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1 (got {max_scale})")
        self.current = model
        self.version = version
        self.model_dir = model_dir
        self.check_every = check_every
        self.correction_decay = correction_decay
        self.max_scale = max_scale
        if initial_scale <= 0.0:
            raise ValueError(f"initial_scale must be > 0 (got {initial_scale})")
        self.scale = initial_scale  # online correction factor (measured / predicted, smoothed)
        self._log_scale = math.log(initial_scale)
        if not 0.0 <= host_s <= MAX_HOST_S:
            raise ValueError(f"host_s must be in [0, {MAX_HOST_S}] (got {host_s})")
        self.host_s = host_s  # host time per step added to every prediction (smoothed)
        self.swaps = 0
        self._stamp = self._version_stamp()

    @classmethod
    def from_config(cls, model_dir: Path | None, roofline: dict, check_every: int,
                    correction_decay: float = 0.0) -> LiveLatencyModel:
        if model_dir is None:
            return cls(RooflineModel(RooflineConfig(**roofline)), "roofline-default", None,
                       check_every, correction_decay)
        model, version = load_model_dir(model_dir)
        return cls(model, version, model_dir, check_every, correction_decay)

    def observe(self, predicted_s: float, measured_s: float) -> None:
        """A step predicted (with the current ``scale``) at ``predicted_s`` took ``measured_s``."""
        predicted_s -= self.host_s  # the forward pass the prediction stands for
        if self.correction_decay <= 0.0 or predicted_s <= 0.0 or measured_s <= 0.0:
            return
        bound = math.log(self.max_scale)
        ratio = math.log(measured_s * self.scale / predicted_s)  # vs the uncorrected model
        d = self.correction_decay
        self._log_scale = d * self._log_scale + (1.0 - d) * min(max(ratio, -bound), bound)
        self.scale = math.exp(self._log_scale)

    def observe_host(self, host_s: float) -> None:
        """A busy engine spent ``host_s`` of one step's cycle outside the forward pass."""
        if self.correction_decay <= 0.0 or not host_s >= 0.0:
            return
        d = self.correction_decay
        self.host_s = d * self.host_s + (1.0 - d) * min(host_s, MAX_HOST_S)

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
        self.scale, self._log_scale = 1.0, 0.0
        self.swaps += 1
        return True

    # -- LatencyModel ----------------------------------------------------------------------
    def predict(self, shape: BatchShape) -> float:
        return self.current.predict(shape) * self.scale + self.host_s

    def predict_many(self, shapes: Sequence[BatchShape]) -> np.ndarray:
        return self.current.predict_many(shapes) * self.scale + self.host_s

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.current.predict_features(X) * self.scale + self.host_s
