"""Start-up and readiness: whether an engine replica can serve yet.

An engine replica is *ready* once Serve's controller reports it ``RUNNING``: its constructor,
which loads the model and starts vLLM, has returned and it passes health checks. ``/health``
answers 503 until at least one is (as vLLM's own server does while its engine starts), and
``slidingserve serve`` prints the replicas' states while the model loads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

ENGINE_DEPLOYMENT = "Engine"


def replica_states(status: Any, app: str, deployment: str = ENGINE_DEPLOYMENT) -> dict[str, int]:
    """``{state: count}`` of ``deployment``'s replicas in a ``serve.status()`` answer ({} if the
    application or deployment is not known yet)."""
    app_status = status.applications.get(app)
    if app_status is None or deployment not in app_status.deployments:
        return {}
    states = app_status.deployments[deployment].replica_states
    return {str(getattr(k, "value", k)): int(v) for k, v in states.items() if v}


def running_engine_replicas(app: str) -> int:
    """Engine replicas of application ``app`` that are ``RUNNING`` (asks Serve's controller)."""
    from ray import serve

    return replica_states(serve.status(), app).get("RUNNING", 0)


class EngineReadiness:
    """``await probe()``: whether at least one engine replica is ready.

    ``count`` is a blocking call returning the number of ready replicas (by default
    ``running_engine_replicas(app)``); it runs in a thread, at most once per ``ttl_s``. A
    failing ``count`` (controller unreachable) reads as not ready.
    """

    def __init__(self, app: str, count: Callable[[], int] | None = None, ttl_s: float = 1.0):
        self.app, self.ttl_s = app, ttl_s
        self._count = count or (lambda: running_engine_replicas(app))
        self._checked_at = -float("inf")
        self.ready_replicas = 0

    async def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.ttl_s:
            try:
                self.ready_replicas = await asyncio.to_thread(self._count)
            except Exception:  # no answer from the controller: not known to be ready
                self.ready_replicas = 0
            self._checked_at = now
        return self.ready_replicas > 0


def progress_line(status: Any, app: str, elapsed_s: float) -> str:
    """One line of start-up progress: the application's state and each deployment's replicas."""
    app_status = status.applications.get(app)
    if app_status is None:
        return f"[{elapsed_s:4.0f}s] {app}: waiting for Serve's controller"
    parts = []
    for name in sorted(app_status.deployments):
        states = replica_states(status, app, name)
        text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none yet"
        if name == ENGINE_DEPLOYMENT and states.get("RUNNING", 0) == 0:
            text += " (loading the model and starting vLLM)"
        parts.append(f"{name}: {text}")
    state = str(getattr(app_status.status, "value", app_status.status)).lower()
    return f"[{elapsed_s:4.0f}s] {app} {state}; " + "; ".join(parts)


def wait_until_running(app: str, echo: Callable[[str], None], poll_s: float = 2.0,
                       every_s: float = 10.0) -> None:
    """Block until ``app`` is RUNNING, echoing ``progress_line`` when it changes (and every
    ``every_s`` seconds); raise ``RuntimeError`` with Serve's message if its deployment fails."""
    from ray import serve

    t0 = time.monotonic()
    last, last_at = "", -float("inf")
    while True:
        status = serve.status()
        app_status = status.applications.get(app)
        state = str(getattr(app_status.status, "value", "")) if app_status else ""
        now = time.monotonic()
        line = progress_line(status, app, now - t0)
        if line.split("] ", 1)[-1] != last or now - last_at >= every_s:
            echo(line)
            last, last_at = line.split("] ", 1)[-1], now
        if state == "RUNNING":
            return
        if state == "DEPLOY_FAILED":
            message = app_status.message if app_status else ""
            raise RuntimeError(f"application {app!r} failed to deploy: {message}")
        time.sleep(poll_s)
