"""Shared helpers for the serve tests: a free port, a Ray + Serve app runner, a stream's SSE
events, a metrics scrape, and polling until a condition holds."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(
    args: dict[str, Any], before_run: Callable[[], Any] | None = None, **ray_init: Any
) -> Iterator[str]:
    """Start local Ray, run the application with ``args``, yield its base URL, tear down."""
    import ray
    from ray import serve

    from slidingserve.serve.app import build

    port = free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, **ray_init)
    try:
        if before_run is not None:
            before_run()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        t0 = time.time()
        serve.run(build(args), name="slidingserve", route_prefix="/")
        print(f"serve app up in {time.time() - t0:.1f}s")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body that ends with ``data: [DONE]``."""
    lines = [ln[len("data: ") :] for ln in text.splitlines() if ln.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", text[-300:]
    return [json.loads(x) for x in lines[:-1]]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` every second until it returns something true; fail after ``timeout_s``."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def scrape_metrics(port: int) -> str:
    """The Prometheus exposition served on ``port``."""
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
