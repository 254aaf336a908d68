"""The serve commands are reachable from the main CLI and refuse bad input clearly."""

from __future__ import annotations

from typer.testing import CliRunner

from slidingserve.cli import app
from slidingserve.serve.cli import curl_line


def test_main_cli_mounts_the_serve_commands():
    out = CliRunner().invoke(app, ["--help"]).output
    for command in ("serve", "dashboards", "bench"):
        assert command in out
    assert "push" in CliRunner().invoke(app, ["dashboards", "--help"]).output
    assert "http" in CliRunner().invoke(app, ["bench", "--help"]).output


def test_bench_http_bad_input():
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "http", "--url", "localhost:8000", "--rate", "1",
                              "--duration", "1"])
    assert res.exit_code == 2 and "'localhost:8000'" in res.output
    res = runner.invoke(app, ["bench", "http", "--url", "http://x", "--rate", "1", "--duration",
                              "1", "--tier-mix", "gold=1"])
    assert res.exit_code == 2 and "'gold'" in res.output
    res = runner.invoke(app, ["bench", "http", "--url", "http://x", "--rate", "-2",
                              "--duration", "1"])
    assert res.exit_code == 2 and "rate" in res.output


def test_serve_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications:\n  - name: x\n    import_path: slidingserve.serve.app:build\n"
                   "    args: {num_replicas: 0}\n")
    res = CliRunner().invoke(app, ["serve", "--config", str(bad)])
    assert res.exit_code == 2 and "num_replicas" in res.output


def test_curl_line_carries_the_slo_header():
    line = curl_line("http://127.0.0.1:8000", "interactive", keyed=True)
    assert "-H 'x-slo-tier: interactive'" in line and "Bearer $SLIDINGSERVE_KEY" in line
    assert line.startswith("curl -s http://127.0.0.1:8000/v1/completions")


def test_serve_start_up_then_sigterm():
    """``slidingserve serve`` as a user and a supervisor see it: progress lines while the model
    loads; ``/health`` 503 until the engine replica is ready, then 200; an interactive request
    sent while the engine starts waits for it and is served, not refused for a predicted TTFT
    that counts the start-up; SIGTERM -> Serve and the local Ray shut down and the command
    exits 0 (the default SIGTERM action would kill the driver and leave the cluster running)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    import httpx
    import pytest

    pytest.importorskip("vllm")
    port = 8765
    exe = Path(sys.executable).with_name("slidingserve")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "serving; press Ctrl-C to stop" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    health: list[int] = []
    early: dict[str, object] = {}

    def send_early() -> None:  # sent while the engine loads: waits for it
        try:
            r = httpx.post(f"{url}/v1/completions", timeout=300,
                           headers={"x-slo-tier": "interactive"},
                           json={"prompt": "ka ko ri su", "max_tokens": 4})
            early["status"], early["body"] = r.status_code, r.text
        except httpx.HTTPError as exc:
            early["status"], early["body"] = None, repr(exc)

    sender: threading.Thread | None = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                code = httpx.get(f"{url}/health", timeout=5).status_code
            except httpx.HTTPError:
                code = 0  # the proxy is not listening yet
            if code:
                health.append(code)
            if code == 503 and sender is None:
                sender = threading.Thread(target=send_early, daemon=True)
                sender.start()
            if code == 200 and up.is_set():
                break
            time.sleep(0.5)
        out = "".join(lines)
        assert up.is_set(), out[-3000:]
        assert "loading the model" in out, out[-3000:]  # progress while it loads
        assert health and health[-1] == 200, health
        ours = health[next((i for i, c in enumerate(health) if c != 404), len(health)):]
        assert set(ours) <= {200, 503}, health  # 404: Serve's proxy before the app's route
        assert ours == sorted(ours, key=lambda c: c == 200), health  # never 503 after 200
        if sender is not None:  # the ingress answered before the engine was ready
            sender.join(timeout=300)
            assert early.get("status") == 200, early
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines)
    assert proc.returncode == 0, out[-2000:]
    assert "slidingserve: stopping" in out
