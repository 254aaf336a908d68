"""Shared helpers for the serve tests: a free port and a Ray + Serve app runner."""

from __future__ import annotations

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
