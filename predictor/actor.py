"""Publishing over Ray: the named, detached predictor actor, and the clients replicas use.

  get_or_create_actor(...)   the one ``PredictorService`` actor of a cluster (named, detached,
                             ``get_if_exists``), threaded so that version polls are never queued
                             behind a retrain; optionally retrains every ``retrain_every_s``;
                             bound to one served model and hardware (``served``, or the first
                             samples or model it accepts)
  SampleSender               a replica's buffer of step samples, flushed to the actor in batches
                             with the replica's provenance
  ModelSubscriber            a replica's view of the published model: ``poll()`` asks for the
                             version (an int) and fetches and validates the model bytes only when
                             it changed; a model that fails validation, or was trained on another
                             served model or hardware than the replica's, is refused and the
                             previous one stays in use

Ray is imported lazily so that the rest of ``predictor`` works without it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from predictor.bundle import ModelFormatError
from predictor.model import Kind, LightGBMLatencyModel
from predictor.provenance import ProvenanceMismatchError, bundle_provenance, require_same
from predictor.service import PredictorService, ServiceConfig
from predictor.steptrace import Provenance
from slidingserve.latency.features import N_FEATURES, BatchShape, features_of

log = logging.getLogger(__name__)

ACTOR_NAME = "slidingserve-predictor"
NAMESPACE = "slidingserve"


class PredictorActor(PredictorService):
    """``PredictorService`` plus an optional retraining loop on a background thread."""

    def __init__(
        self,
        config: ServiceConfig | None = None,
        initial: bytes | None = None,
        retrain_every_s: float | None = None,
        served: Provenance | None = None,
    ):
        super().__init__(config, initial, served)
        self._stop = threading.Event()
        self._last_seen = 0
        if retrain_every_s is not None:
            if retrain_every_s <= 0:
                raise ValueError(f"retrain_every_s must be > 0 (got {retrain_every_s})")
            threading.Thread(target=self._loop, args=(retrain_every_s,), daemon=True).start()

    def _loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            seen = int(self.stats()["seen"])  # type: ignore[call-overload]
            if seen > self._last_seen:
                self._last_seen = seen
                try:
                    self.retrain()
                except Exception:  # keep the loop (and the current model) alive
                    log.exception("scheduled retrain failed; keeping the current model")

    def stop(self) -> None:
        self._stop.set()


def get_or_create_actor(
    config: ServiceConfig | None = None,
    *,
    name: str = ACTOR_NAME,
    namespace: str = NAMESPACE,
    initial: bytes | None = None,
    retrain_every_s: float | None = None,
    served: Provenance | None = None,
) -> Any:
    """The named detached actor; created with these arguments only if it does not exist yet
    (an existing actor keeps the served model and hardware it is bound to)."""
    import ray

    cls = ray.remote(PredictorActor)
    return cls.options(  # type: ignore[attr-defined]
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=4,
        num_cpus=0,
    ).remote(config, initial, retrain_every_s, served)


class SampleSender:
    """Buffers a replica's step samples (measured on ``provenance``) and sends them to the
    actor ``batch`` rows at a time."""

    def __init__(self, actor: Any, provenance: Provenance, batch: int = 256):
        if batch <= 0:
            raise ValueError(f"batch must be > 0 (got {batch})")
        self.actor = actor
        self.provenance = provenance
        self.batch = batch
        self._X: list[np.ndarray] = []
        self._y: list[float] = []

    def record(self, step: BatchShape | np.ndarray, latency_s: float) -> None:
        x = features_of(step) if isinstance(step, BatchShape) else np.asarray(step, np.float64)
        if x.shape != (N_FEATURES,):
            raise ValueError(f"a step's features must have shape ({N_FEATURES},), got {x.shape}")
        self._X.append(x)
        self._y.append(float(latency_s))
        if len(self._y) >= self.batch:
            self.flush()

    def flush(self) -> Any:
        """Send what is buffered (fire and forget); returns the Ray ref, or None if empty."""
        if not self._y:
            return None
        X, y = np.array(self._X), np.array(self._y)
        self._X, self._y = [], []
        return self.actor.add_samples.remote(X, y, self.provenance)


class ModelSubscriber:
    """A replica's current published model; ``poll()`` is cheap when nothing changed.

    ``served``: the replica's own provenance; a model trained on another served model or
    hardware is refused (None accepts any, for tools that only inspect models)."""

    def __init__(self, actor: Any, kind: Kind = "mean", served: Provenance | None = None):
        self.actor = actor
        self.kind = kind
        self.served = served
        self.version = 0
        self.model: LightGBMLatencyModel | None = None
        self.refused = 0
        self._refused_version = 0  # not fetched again: the actor's versions never repeat

    def poll(self, timeout_s: float = 10.0) -> bool:
        """Fetch the model if the published version changed; True when a new one was loaded."""
        import ray

        version = ray.get(self.actor.version.remote(), timeout=timeout_s)
        if version <= max(self.version, self._refused_version):
            return False
        got = ray.get(self.actor.model_bytes.remote(), timeout=timeout_s)
        if got is None:
            return False
        version, blob = got
        try:
            model = LightGBMLatencyModel.from_bytes(blob, self.kind)
            if self.served is not None:
                what = f"published model v{version}"
                trained_on = bundle_provenance(model.bundle.provenance, what)
                require_same(self.served, trained_on, f"{what} was", "this replica serves")
        except (ModelFormatError, ProvenanceMismatchError) as exc:
            self.refused += 1
            self._refused_version = version
            log.error("published model v%s refused, keeping v%s: %s", version, self.version, exc)
            return False
        if model.version != version:
            self.refused += 1
            log.error(
                "published bytes carry v%s, actor says v%s; keeping v%s",
                model.version,
                version,
                self.version,
            )
            return False
        self.model, self.version = model, version
        return True
