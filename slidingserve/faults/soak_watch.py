"""What a soak watches in the running application, sampled on a background thread.

Every ``period_s``: the resident memory (RSS) of each Ray actor process of the application
(engine and ingress replicas, the HTTP proxy, the Serve controller, the predictor) and of
their child processes (vLLM's engine core), the actor ids of the engine and ingress replicas
(a new id is a restarted replica), each engine replica's KV blocks in use (from its
routing stats, ``ReplicaLoad.kv_blocks_used``), and the host's speed (``host_probe_ms``: the
fastest of a few runs of one fixed piece of CPU work in this process). When the soak plays one
schedule several times, the application's load is the same in every play, so a probe that is
faster or slower in one play than in another measures the machine (its other tenants, its
clock), not the system under test.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from slidingserve.faults.harness import APP_NAME

SERVE_NAMESPACE = "serve"
REPLICA_CLASS = f"ServeReplica:{APP_NAME}:"  # + deployment name
MIB = 2**20


PROBE_RUNS = 5
PROBE_N = 20_000  # about 1-2 ms of CPU per run on a 2020s x86 core


def host_probe_ms(runs: int = PROBE_RUNS, n: int = PROBE_N) -> float:
    """The fastest of ``runs`` timings of one fixed pure-Python loop, in ms: a run that lost
    the CPU to another process is slower, so the minimum is the host's speed itself."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        acc = 0
        for i in range(n):
            acc += i * i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1e3, 4)


@dataclass(frozen=True)
class ActorProcess:
    label: str  # e.g. "Engine#ab12cd", "ProxyActor", "ServeController"
    name: str  # the actor's registered name
    pid: int
    deployment: str | None  # "Engine" / "Ingress" for a replica of the app, else None


def app_actors() -> list[ActorProcess]:
    """Alive named actors of the cluster (all of them belong to the application under test)."""
    import ray._private.state as gcs

    out = []
    for info in gcs.actors().values():
        if info.get("State") != "ALIVE" or not info.get("Name") or not info.get("Pid"):
            continue
        cls, name = str(info.get("ActorClassName") or ""), str(info["Name"])
        deployment = cls[len(REPLICA_CLASS):] if cls.startswith(REPLICA_CLASS) else None
        label = f"{deployment}#{name.rsplit('#', 1)[-1]}" if deployment else cls.split(".")[-1]
        out.append(ActorProcess(label, name, int(info["Pid"]), deployment))
    return sorted(out, key=lambda a: a.label)


def rss_by_process(actors: list[ActorProcess]) -> dict[str, float]:
    """RSS in MiB of each actor's process and of its children, labelled ``actor[/child]``."""
    out: dict[str, float] = {}
    for a in actors:
        try:
            proc = psutil.Process(a.pid)
            out[a.label] = proc.memory_info().rss / MIB
            for child in proc.children(recursive=True):
                out[f"{a.label}/{child.name()[:24]}:{child.pid}"] = child.memory_info().rss / MIB
        except psutil.Error:
            continue
    return out


def engine_stats(actors: list[ActorProcess], timeout_s: float = 10.0) -> dict[str, dict]:
    """Each engine replica's routing stats (its load, KV blocks in use), asked directly."""
    import ray

    engines = [a for a in actors if a.deployment == "Engine"]
    refs: dict[str, Any] = {}
    for a in engines:
        try:
            refs[a.label] = ray.get_actor(a.name, namespace=SERVE_NAMESPACE) \
                .record_routing_stats.remote()
        except ValueError:  # gone since the actor table was read
            continue
    out: dict[str, dict] = {}
    for label, ref in refs.items():
        try:
            out[label] = dict(ray.get(ref, timeout=timeout_s))
        except Exception as exc:  # a replica that cannot answer is reported as such
            out[label] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


@dataclass
class AppWatch:
    """Samples the application every ``period_s`` on a thread, from ``t0`` (wall time)."""

    t0: float
    period_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    replicas_seen: dict[str, float] = field(default_factory=dict)  # replica label -> first seen
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AppWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-watch")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def sample(self) -> dict[str, Any]:
        actors = app_actors()
        t = time.time() - self.t0
        for a in actors:
            if a.deployment is not None:
                self.replicas_seen.setdefault(a.label, round(t, 1))
        stats = engine_stats(actors)
        row = {
            "t_s": round(t, 1),
            "rss_mib": {k: round(v, 1) for k, v in rss_by_process(actors).items()},
            "replicas": sorted(a.label for a in actors if a.deployment is not None),
            "kv_blocks_used": {k: s.get("kv_blocks_used") for k, s in stats.items()},
            "kv_blocks_total": {k: s.get("kv_blocks_total") for k, s in stats.items()},
            "engine_queue": {k: s.get("queue_len") for k, s in stats.items()},
            "engine_running": {k: s.get("running") for k, s in stats.items()},
            "engine_waiting": {k: sum((s.get("waiting_requests") or {}).values())
                               for k, s in stats.items()},
            "host_probe_ms": host_probe_ms(),
        }
        self.samples.append(row)
        return row

    def restarts(self) -> dict[str, Any]:
        """Replicas that appeared after the first sample, and those that vanished (a restart
        shows as one of each; no autoscaling runs here)."""
        if not self.samples:
            return {"new": [], "gone": [], "count": 0}
        first = set(self.samples[0]["replicas"])
        last = set(self.samples[-1]["replicas"])
        new = sorted(set(self.replicas_seen) - first)
        gone = sorted(first - last)
        return {"new": new, "gone": gone, "count": max(len(new), len(gone))}
