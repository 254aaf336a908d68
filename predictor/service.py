"""The model publisher's logic, independent of Ray: sample buffers, retraining, the validation gate.

``PredictorService`` receives step samples from replicas into two bounded reservoirs (a seeded
share of every batch goes to the held-out reservoir, the rest to the training one; reservoir
sampling keeps a uniform sample of everything seen in fixed memory). ``retrain()`` fits a
candidate on the training reservoir; ``submit()`` takes a candidate trained elsewhere (the
``predictor.retrain`` job). Either way the candidate passes the validation gate only if its MAPE
on the held-out reservoir beats the current model's by ``min_improvement`` (relative); then it
is published under the next version number. Otherwise the current model stays. Versions only
ever increase; replicas poll ``version()`` (an int) and fetch ``model_bytes()`` when it changes.
With ``store_dir`` set, every published model is also written there atomically (the directory
the engine's ``LiveLatencyModel`` watches).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from predictor.bundle import ModelBundle, ModelFormatError, save_bundle
from predictor.model import LightGBMLatencyModel
from predictor.steptrace import Provenance, StepTrace
from predictor.training import TrainConfig, ape, fit_bundle
from slidingserve.latency.features import N_FEATURES

log = logging.getLogger(__name__)

SAMPLE_PROVENANCE = Provenance("live", "live", "live", "live")


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(default=20_000, ge=10)  # training reservoir size
    holdout_capacity: int = Field(default=5_000, ge=10)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_train_samples: int = Field(default=200, ge=10)
    min_holdout_samples: int = Field(default=50, ge=1)
    min_improvement: float = Field(default=0.0, ge=0, lt=1)  # relative MAPE gain needed
    seed: int = 0
    train: TrainConfig = TrainConfig()
    store_dir: Path | None = None


class Reservoir:
    """Uniform sample of at most ``capacity`` rows out of all rows offered (Algorithm R)."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.X = np.zeros((capacity, N_FEATURES))
        self.y = np.zeros(capacity)
        self.seen = 0
        self._rng = rng

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        for x_row, y_val in zip(X, y, strict=True):
            if self.seen < self.capacity:
                slot = self.seen
            else:
                slot = int(self._rng.integers(0, self.seen + 1))
            if slot < self.capacity:
                self.X[slot] = x_row
                self.y[slot] = y_val
            self.seen += 1

    def trace(self) -> StepTrace:
        n = len(self)
        return StepTrace.from_arrays(self.X[:n].copy(), self.y[:n].copy(), SAMPLE_PROVENANCE)


@dataclass(frozen=True)
class GateResult:
    published: bool
    version: int  # the current version after the decision
    candidate_mape: float | None
    current_mape: float | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class PredictorService:
    """See the module docstring. Thread-safe: one lock guards buffers and the current model."""

    def __init__(self, config: ServiceConfig | None = None, initial: bytes | None = None):
        self.config = config or ServiceConfig()
        rng = np.random.default_rng(self.config.seed)
        self._split_rng = np.random.default_rng(self.config.seed + 1)
        self._train = Reservoir(self.config.capacity, rng)
        self._holdout = Reservoir(
            self.config.holdout_capacity, np.random.default_rng(rng.integers(1 << 31))
        )
        self._lock = threading.Lock()
        self._version = 0
        self._blob: bytes | None = None
        self._model: LightGBMLatencyModel | None = None
        self._history: list[dict[str, object]] = []
        if initial is not None:
            result = self.submit(initial, force=True)
            if not result.published:
                raise ModelFormatError(f"initial model refused: {result.reason}")

    # ---- cheap queries replicas poll ----------------------------------------------------------
    def version(self) -> int:
        return self._version

    def model_bytes(self) -> tuple[int, bytes] | None:
        with self._lock:
            return None if self._blob is None else (self._version, self._blob)

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "version": self._version,
                "train_samples": len(self._train),
                "holdout_samples": len(self._holdout),
                "seen": self._train.seen + self._holdout.seen,
                "history": list(self._history),
            }

    # ---- samples ------------------------------------------------------------------------------
    def add_samples(self, X: np.ndarray | list[list[float]], y: np.ndarray | list[float]) -> int:
        """Buffer step samples (features schema v1, latency seconds); returns samples seen."""
        Xa = np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(Xa) != len(ya):
            raise ValueError(f"{len(Xa)} feature rows but {len(ya)} latencies")
        StepTrace.from_arrays(Xa, ya, SAMPLE_PROVENANCE)  # validates, names the bad row
        with self._lock:
            to_holdout = self._split_rng.random(len(ya)) < self.config.holdout_fraction
            self._holdout.add(Xa[to_holdout], ya[to_holdout])
            self._train.add(Xa[~to_holdout], ya[~to_holdout])
            return self._train.seen + self._holdout.seen

    def add_holdout(self, X: np.ndarray | list[list[float]], y: np.ndarray | list[float]) -> int:
        """Buffer samples straight into the held-out reservoir (e.g. a retrain job's test split)."""
        Xa = np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        StepTrace.from_arrays(Xa, ya, SAMPLE_PROVENANCE)
        with self._lock:
            self._holdout.add(Xa, ya)
            return len(self._holdout)

    # ---- training and the gate ------------------------------------------------------------------
    def retrain(self) -> GateResult:
        """Fit a candidate on the training reservoir and pass it through the gate."""
        with self._lock:
            if len(self._train) < self.config.min_train_samples:
                return self._keep(
                    f"only {len(self._train)} training samples (< {self.config.min_train_samples})"
                )
            train = self._train.trace()
        bundle = fit_bundle(train, self.config.train, version=self._version + 1)
        return self.submit(bundle.to_bytes())

    def submit(self, blob: bytes, force: bool = False) -> GateResult:
        """Gate a candidate model (bytes of a ``ModelBundle``); ``force`` skips the comparison."""
        try:
            candidate = LightGBMLatencyModel.from_bytes(blob)
        except ModelFormatError as e:
            with self._lock:
                return self._keep(f"candidate refused: {e}")
        with self._lock:
            holdout = self._holdout.trace() if len(self._holdout) else None
            cand_mape = cur_mape = None
            if holdout is not None:
                cand_mape = float(
                    ape(candidate.predict_features(holdout.X), holdout.latency_s).mean()
                )
                if self._model is not None:
                    cur_mape = float(
                        ape(self._model.predict_features(holdout.X), holdout.latency_s).mean()
                    )
            if not force and self._model is not None:
                if holdout is None or len(holdout) < self.config.min_holdout_samples:
                    n = 0 if holdout is None else len(holdout)
                    return self._keep(
                        f"only {n} held-out samples (< "
                        f"{self.config.min_holdout_samples}); cannot validate",
                        cand_mape,
                        cur_mape,
                    )
                assert cand_mape is not None and cur_mape is not None
                if cand_mape >= cur_mape * (1.0 - self.config.min_improvement):
                    return self._keep(
                        f"candidate MAPE {cand_mape:.4f} does not beat current {cur_mape:.4f}",
                        cand_mape,
                        cur_mape,
                    )
            return self._publish(candidate.bundle, cand_mape, cur_mape)

    def _publish(self, bundle: ModelBundle, cand: float | None, cur: float | None) -> GateResult:
        version = self._version + 1
        bundle = bundle.with_version(version)
        blob = bundle.to_bytes()
        model = LightGBMLatencyModel(bundle)
        if self.config.store_dir is not None:
            save_bundle(bundle, self.config.store_dir)
        self._version, self._blob, self._model = version, blob, model
        return self._record(GateResult(True, version, cand, cur, "published"))

    def _keep(self, reason: str, cand: float | None = None, cur: float | None = None) -> GateResult:
        return self._record(GateResult(False, self._version, cand, cur, reason))

    def _record(self, result: GateResult) -> GateResult:
        self._history.append({"time": time.time(), **result.to_dict()})
        del self._history[:-50]
        log.info("predictor gate: %s", result)
        return result
