"""A replica's link to the central predictor actor: step samples out, model versions in.

Every ``poll_period_s`` (on a worker thread, so the replica's event loop never blocks):

1. Steps out: the engine's scheduler rewrites its step trace (``ReplicaFiles.step_trace``)
   every few steps; rows newer than the last one forwarded go to the actor in batches
   (``predictor.actor.SampleSender``) and feed the chunk-size and predictor-error metrics.
2. Models in: ``predictor.actor.ModelSubscriber.poll()`` asks for the published version (an
   int) and fetches the model only when it changed; a model trained on another served model or
   hardware than the replica's (``EngineHost.provenance``) is refused. A new model is applied
   live twice: to the replica's own load estimate (routing stats, admission) and to the engine,
   by swapping the latency-model directory the scheduler watches (``LiveLatencyModel``: hot
   swap between steps).

Failures are logged and retried next period; serving never waits on the predictor.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.latency.features import F_PREFILL_TOKENS, FEATURE_NAMES
from slidingserve.serve.config import PredictorLinkConfig
from slidingserve.serve.engine_host import EngineHost

log = logging.getLogger(__name__)


def swap_model_dir(bundle: Any, target: Path) -> Path:
    """Replace ``target`` with ``bundle``'s model directory (whatever was there before).

    The new directory is written complete beside ``target`` and renamed into place, so the
    engine sees either the old model or the new one, never a half-written one.
    """
    from predictor.bundle import save_bundle

    staging = target.parent / f".{target.name}.staging"
    old = target.parent / f".{target.name}.old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    save_bundle(bundle, staging)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


class StepTraceTail:
    """New rows of a step-trace file that is rewritten in place (by ``timestamp_s``)."""

    def __init__(self, path: Path):
        self.path = path
        self.last_ts = 0.0
        self._stamp: tuple[int, int] | None = None

    def new_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(X, latency_s, predicted_s) of rows not seen yet, or None. Only the file's newest
        row groups are decoded (``read_steptrace_since``): a read's cost and the memory it
        leaves behind follow the new rows, not the window the trace holds."""
        from predictor.steptrace import TIMESTAMP_COLUMN, read_steptrace_since

        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        trace = read_steptrace_since(self.path, self.last_ts)
        if trace is None:
            return None
        self.last_ts = float(np.max(trace.extra[TIMESTAMP_COLUMN]))
        predicted = trace.extra.get("predicted_s")
        pred = np.asarray(predicted, dtype=np.float64) if predicted is not None else \
            np.full(len(trace), np.nan)
        return trace.X, trace.latency_s, pred


class PredictorLink:
    """Streams a replica's steps to the predictor actor and applies new versions live."""

    def __init__(self, cfg: PredictorLinkConfig, host: EngineHost):

        assert FEATURE_NAMES[F_PREFILL_TOKENS] == "prefill_tokens"
        self.cfg, self.host = cfg, host
        self.tail = StepTraceTail(host.files.step_trace)
        self.samples_sent = 0
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._connect()

    def _connect(self) -> None:
        """Find the predictor actor by name (creating it if there is none) and subscribe.

        After the actor died, the one found here is a new one whose versions start again
        from 1: the subscriber starts afresh, and the replica keeps using the model it has
        until the new actor publishes.
        """
        from predictor.actor import (
            ACTOR_NAME,
            NAMESPACE,
            ModelSubscriber,
            SampleSender,
            get_or_create_actor,
        )
        from predictor.service import ServiceConfig

        served = self.host.provenance
        budget = self.host.cfg.engine.max_num_batched_tokens
        self.actor = get_or_create_actor(
            ServiceConfig(min_prefill_tokens=int(self.cfg.min_prefill_coverage * budget)),
            name=self.cfg.actor_name or ACTOR_NAME,
            namespace=self.cfg.namespace or NAMESPACE,
            retrain_every_s=self.cfg.retrain_every_s,
            served=served,
        )
        self.sender = SampleSender(self.actor, served, batch=self.cfg.sample_batch)
        self.subscriber = ModelSubscriber(self.actor, served=served)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.step)
            except Exception as exc:  # the predictor is advisory: log and retry next period
                log.warning("replica %s: predictor link step failed: %s", self.host.replica,
                            f"{type(exc).__name__}: {str(exc)[:200]}")
                if _actor_died(exc):
                    await asyncio.to_thread(self._reconnect)
            await asyncio.sleep(self.cfg.poll_period_s)

    def _reconnect(self) -> None:
        try:
            self._connect()
            self.reconnects += 1
            log.info("replica %s: reconnected to the predictor actor", self.host.replica)
        except Exception as exc:
            log.warning("replica %s: predictor actor not reachable yet: %s", self.host.replica,
                        exc)

    def step(self) -> None:
        """One period: forward new step samples, then apply a new model version if any."""
        rows = self.tail.new_rows()
        if rows is not None:
            X, y, predicted = rows
            for x, lat, pred in zip(X, y, predicted, strict=True):
                self.sender.record(x, float(lat))
                self.host.metrics.step(int(x[F_PREFILL_TOKENS]),
                                       None if np.isnan(pred) else float(pred), float(lat))
            self.sender.flush()
            self.samples_sent += len(y)
        if self.subscriber.poll():
            model = self.subscriber.model
            assert model is not None
            swap_model_dir(model.bundle, self.host.files.latency_model)
            self.host.set_latency_model(model, self.subscriber.version)
            log.info("replica %s: latency model v%s applied", self.host.replica,
                     self.subscriber.version)


def _actor_died(exc: BaseException) -> bool:
    """True when ``exc`` says the predictor actor is gone (not just slow)."""
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)
