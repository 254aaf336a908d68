"""The system under test: local Ray, the Serve application, its processes and their memory.

``local_app(args)`` starts a local Ray cluster (loopback only, no dashboard), runs the
application built from ``args`` (a ``ServeAppConfig`` dict) and yields an ``AppUnderTest``
that knows where the engine replicas and the predictor actor live, so scenarios can kill
them. ``MemorySampler`` records the resident memory of every process of the cluster (the
driver's descendants) on a background thread, at a bounded period.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

APP_NAME = "slidingserve"
ENGINE_CLASS = f"ServeReplica:{APP_NAME}:Engine"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AppUnderTest:
    url: str
    args: dict[str, Any]
    logs_dir: Path

    def engine_replicas(self) -> dict[str, int]:
        """Alive engine replicas: Serve replica id -> pid of the replica's actor process."""
        return {name.rsplit("#", 1)[-1]: pid
                for name, pid in alive_actors(ENGINE_CLASS).items()}

    def engine_nodes(self) -> dict[str, str]:
        """Alive engine replicas: Serve replica id -> hex id of the Ray node it runs on."""
        return {name.rsplit("#", 1)[-1]: node
                for name, node in alive_actor_nodes(ENGINE_CLASS).items()}

    def running_replicas(self) -> int:
        """Engine replicas Serve reports as RUNNING."""
        from ray import serve

        app = serve.status().applications.get(APP_NAME)
        if app is None:
            return 0
        dep = app.deployments.get("Engine")
        if dep is None:
            return 0
        states: dict[Any, int] = dict(dep.replica_states)
        return int(sum(n for state, n in states.items() if str(state).endswith("RUNNING")))

    def wait_running(self, n: int, timeout_s: float) -> float | None:
        """Seconds until ``n`` engine replicas run (alive actors too), or None on timeout."""
        t0 = time.time()
        while time.time() - t0 < timeout_s:
            if self.running_replicas() >= n and len(self.engine_replicas()) >= n:
                return time.time() - t0
            time.sleep(1.0)
        return None


def alive_actors(class_name: str | None = None) -> dict[str, int]:
    """Alive named actors (of ``class_name``): name -> pid, from the GCS actor table.

    (Ray's state API would need the dashboard, which these clusters do not start.)
    """
    return {str(info["Name"]): int(info["Pid"]) for info in _alive(class_name)}


def alive_actor_nodes(class_name: str | None = None) -> dict[str, str]:
    """Alive named actors (of ``class_name``): name -> hex id of the node it runs on."""
    return {str(info["Name"]): str(info["Address"]["NodeID"]) for info in _alive(class_name)}


def _alive(class_name: str | None) -> list[dict[str, Any]]:
    import ray._private.state as gcs

    return [info for info in gcs.actors().values()
            if info.get("State") == "ALIVE" and info.get("Name") and info.get("Pid")
            and (class_name is None or info.get("ActorClassName") == class_name)]


def kill_process(pid: int) -> None:
    """SIGKILL: the process dies without running any cleanup (a crash, not a shutdown)."""
    os.kill(pid, signal.SIGKILL)


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, children first: the processes of a
    machine that is lost (none of them lives on to finish its work)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        with suppress(psutil.NoSuchProcess):
            child.kill()
    with suppress(ProcessLookupError):
        kill_process(pid)


def orphan_engine_processes() -> list[int]:
    """vLLM engine-core processes whose parent is gone (left behind by a killed replica)."""
    out = []
    for p in psutil.process_iter(["pid", "ppid", "name", "cmdline", "username"]):
        try:
            text = (p.info["name"] or "") + " " + " ".join(p.info["cmdline"] or [])
            if "EngineCore" in text and p.info["ppid"] == 1 and p.info["username"] == \
                    psutil.Process().username():
                out.append(int(p.info["pid"]))
        except (psutil.Error, TypeError):
            continue
    return out


@dataclass
class MemorySampler:
    """Peak RSS of each process of the cluster, sampled every ``period_s`` until ``stop()``."""

    period_s: float = 1.0
    max_samples: int = 3600
    peak_by_pid: dict[int, tuple[str, int]] = field(default_factory=dict)
    first_by_pid: dict[int, int] = field(default_factory=dict)
    peak_total: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while self.samples < self.max_samples and not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def sample(self) -> None:
        total = 0
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                rss = p.memory_info().rss
                name = _short_name(p)
            except psutil.Error:
                continue
            total += rss
            self.first_by_pid.setdefault(p.pid, rss)
            if rss > self.peak_by_pid.get(p.pid, ("", 0))[1]:
                self.peak_by_pid[p.pid] = (name, rss)
        self.peak_total = max(self.peak_total, total)
        self.samples += 1

    def report(self, top: int = 8) -> dict[str, Any]:
        mib = 2**20
        rows = sorted(self.peak_by_pid.items(), key=lambda kv: -kv[1][1])[:top]
        return {
            "samples": self.samples,
            "peak_total_mib": round(self.peak_total / mib, 1),
            "peak_by_process_mib": [
                {"pid": pid, "name": name, "peak_mib": round(rss / mib, 1),
                 "first_mib": round(self.first_by_pid.get(pid, 0) / mib, 1)}
                for pid, (name, rss) in rows
            ],
        }


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system, s) used so far by this process (the load generator) and by
    the processes under it (the local cluster: Ray's, the replicas', the engines'). A process
    that exited is no longer counted, so differences over a run are a lower bound."""
    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system

    me = psutil.Process()
    return used(me), sum(used(p) for p in me.children(recursive=True))


def _short_name(p: psutil.Process) -> str:
    title = " ".join(p.cmdline()[:1]) or p.name()
    return title[:60]


@contextmanager
def local_app(args: dict[str, Any], before_run: Callable[[], Any] | None = None,
              num_cpus: int = 4, ready_timeout_s: float = 600.0) -> Iterator[AppUnderTest]:
    """Start local Ray + the application (HTTP on 127.0.0.1), yield it, tear everything down.
    The proxy runs ``IngressGuard`` (``slidingserve.serve.proxy_guard``)."""
    import ray
    from ray import serve

    from slidingserve.serve.app import build
    from slidingserve.serve.proxy_guard import guarded_ray_start

    port = free_port()
    with guarded_ray_start():
        # always a cluster of its own: never one found running on the machine (a left-over
        # GCS would be joined, and ``num_cpus`` refused)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 namespace="slidingserve-faults")
    try:
        from ray._private.worker import global_worker

        node: Any = global_worker.node
        logs = Path(node.get_logs_dir_path())
        if before_run is not None:
            before_run()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(args), name=APP_NAME, route_prefix="/")
        app = AppUnderTest(f"http://127.0.0.1:{port}", args, logs)
        app.wait_running(int(args.get("num_replicas", 1)), ready_timeout_s)
        yield app
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
