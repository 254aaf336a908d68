"""The model publisher's logic, independent of Ray: sample buffers, retraining, the validation gate.

One publisher serves one *served key* (engine build, model and hardware; ``predictor.provenance``):
given at construction, or taken from the first samples or the first model accepted. Samples,
held-out rows and models of another served model or hardware are refused with
``ProvenanceMismatchError``, so a model measured on one deployment never reaches another.

``PredictorService`` receives step samples from replicas into two bounded reservoirs (a seeded
share of every batch goes to the held-out reservoir, the rest to the training one; reservoir
sampling keeps a uniform sample of everything seen in fixed memory). ``retrain()`` fits a
candidate on the training reservoir; ``submit()`` takes a candidate trained elsewhere (the
``predictor.retrain`` job), optionally with its own held-out steps. Either way the candidate
passes the validation gate only if it was fitted on prefills of at least ``min_prefill_tokens``
tokens (its recorded ``coverage``) and, on the held-out reservoir plus those steps (at least
``min_holdout_samples``), its MAPE is at most ``max_mape`` and beats the current model's by
``min_improvement`` (relative); the first model passes the same gate, with no current model to
beat. A candidate that passes is published under the next version number, and only then do the
steps it brought join the held-out reservoir; otherwise the current model stays and they are
dropped. Versions only ever increase; replicas poll ``version()`` (an int) and fetch
``model_bytes()`` when it changes. With ``store_dir`` set, every published model is also written
there atomically (the directory the engine's ``LiveLatencyModel`` watches).
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
from predictor.provenance import (
    bundle_provenance,
    describe,
    require_same,
    trace_provenance,
)
from predictor.steptrace import Provenance, StepTrace
from predictor.training import TrainConfig, ape, fit_bundle
from slidingserve.latency.features import N_FEATURES

log = logging.getLogger(__name__)


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(default=20_000, ge=10)  # training reservoir size
    holdout_capacity: int = Field(default=5_000, ge=10)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_train_samples: int = Field(default=200, ge=10)
    min_holdout_samples: int = Field(default=50, ge=1)
    min_improvement: float = Field(default=0.0, ge=0, lt=1)  # relative MAPE gain needed
    # held-out MAPE no candidate may exceed; 1.0: a model further off than predicting 0 s
    max_mape: float = Field(default=1.0, gt=0)
    # a candidate must have been fitted on a step with at least this many prefill tokens (its
    # ``coverage``): the held-out steps only cover the shapes traffic has produced, and a model
    # fitted on short prompts alone extrapolates long chunks several-fold off. 0: no check
    min_prefill_tokens: int = Field(default=0, ge=0)
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

    def trace(self, provenance: Provenance) -> StepTrace:
        n = len(self)
        return StepTrace.from_arrays(self.X[:n].copy(), self.y[:n].copy(), provenance)


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

    def __init__(self, config: ServiceConfig | None = None, initial: bytes | None = None,
                 served: Provenance | None = None):
        self.config = config or ServiceConfig()
        rng = np.random.default_rng(self.config.seed)
        self._split_rng = np.random.default_rng(self.config.seed + 1)
        self._train = Reservoir(self.config.capacity, rng)
        self._holdout = Reservoir(
            self.config.holdout_capacity, np.random.default_rng(rng.integers(1 << 31))
        )
        self._lock = threading.Lock()
        self._served = served
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

    def served(self) -> Provenance | None:
        """The served model and hardware this publisher keeps models for (None: not yet bound)."""
        return self._served

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "version": self._version,
                "served": None if self._served is None else describe(self._served),
                "train_samples": len(self._train),
                "holdout_samples": len(self._holdout),
                "seen": self._train.seen + self._holdout.seen,
                "history": list(self._history),
            }

    # ---- samples ------------------------------------------------------------------------------
    def add_samples(self, X: np.ndarray | list[list[float]], y: np.ndarray | list[float],
                    provenance: Provenance) -> int:
        """Buffer step samples (features schema v1, latency seconds) measured on
        ``provenance``; returns samples seen. Samples of another served key are refused."""
        Xa = np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(Xa) != len(ya):
            raise ValueError(f"{len(Xa)} feature rows but {len(ya)} latencies")
        StepTrace.from_arrays(Xa, ya, provenance)  # validates, names the bad row
        with self._lock:
            self._check_served(provenance, "step samples")
            if self._served is None:
                self._served = provenance
            to_holdout = self._split_rng.random(len(ya)) < self.config.holdout_fraction
            self._holdout.add(Xa[to_holdout], ya[to_holdout])
            self._train.add(Xa[~to_holdout], ya[~to_holdout])
            return self._train.seen + self._holdout.seen

    def _check_served(self, provenance: Provenance, what: str) -> None:
        if self._served is not None:
            require_same(self._served, provenance, what, "this predictor serves")

    # ---- training and the gate ------------------------------------------------------------------
    def retrain(self) -> GateResult:
        """Fit a candidate on the training reservoir and pass it through the gate."""
        with self._lock:
            if len(self._train) < self.config.min_train_samples or self._served is None:
                return self._keep(
                    f"only {len(self._train)} training samples (< {self.config.min_train_samples})"
                )
            train = self._train.trace(self._served)
        bundle = fit_bundle(train, self.config.train, version=self._version + 1)
        return self.submit(bundle.to_bytes())

    def submit(self, blob: bytes, force: bool = False,
               holdout: StepTrace | None = None) -> GateResult:
        """Gate a candidate model (bytes of a ``ModelBundle``); ``holdout``: steps held out of
        its training, judged on with the held-out reservoir and kept only if it is published.
        ``force`` skips the comparison. A candidate (or held-out steps) of another served model
        or hardware raises ``ProvenanceMismatchError``."""
        try:
            candidate = LightGBMLatencyModel.from_bytes(blob)
        except ModelFormatError as e:
            with self._lock:
                return self._keep(f"candidate refused: {e}")
        prov = bundle_provenance(candidate.bundle.provenance, "the candidate model")
        if holdout is not None and len(holdout):
            require_same(prov, trace_provenance(holdout, "the held-out steps"),
                         "the held-out steps", "the candidate was trained on")
        with self._lock:
            self._check_served(prov, "the candidate model")
            X, y = self._holdout.X[: len(self._holdout)], self._holdout.y[: len(self._holdout)]
            if holdout is not None and len(holdout):
                X, y = np.vstack([X, holdout.X]), np.concatenate([y, holdout.latency_s])
            cand_mape = cur_mape = None
            if len(y):
                cand_mape = float(ape(candidate.predict_features(X), y).mean())
                if self._model is not None:
                    cur_mape = float(ape(self._model.predict_features(X), y).mean())
            if not force:
                reason = self._coverage_gate(candidate) or self._gate(len(y), cand_mape, cur_mape)
                if reason is not None:
                    return self._keep(reason, cand_mape, cur_mape)
            if self._served is None:
                self._served = prov
            if holdout is not None and len(holdout):
                self._holdout.add(holdout.X, holdout.latency_s)
            return self._publish(candidate.bundle, cand_mape, cur_mape)

    def _coverage_gate(self, candidate: LightGBMLatencyModel) -> str | None:
        """Why the candidate's training range is too narrow to publish, or None."""
        need = self.config.min_prefill_tokens
        if need == 0:
            return None
        coverage = candidate.bundle.metrics.get("coverage")
        seen = coverage.get("max_prefill_tokens") if isinstance(coverage, dict) else None
        if not isinstance(seen, int):
            return f"candidate records no training coverage; min_prefill_tokens is {need}"
        if seen < need:
            return (f"candidate was fitted on prefills of at most {seen} tokens (< "
                    f"min_prefill_tokens {need}): it would extrapolate longer chunks")
        return None

    def _gate(self, n: int, cand: float | None, cur: float | None) -> str | None:
        """Why the candidate is kept out, or None when it passes."""
        if n < self.config.min_holdout_samples or cand is None:
            need = self.config.min_holdout_samples
            return f"only {n} held-out samples (< {need}); cannot validate"
        if not cand <= self.config.max_mape:  # also refuses NaN
            return f"candidate MAPE {cand:.4f} exceeds max_mape {self.config.max_mape:.4f}"
        if cur is not None and cand >= cur * (1.0 - self.config.min_improvement):
            return f"candidate MAPE {cand:.4f} does not beat current {cur:.4f}"
        return None

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
