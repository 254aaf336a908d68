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


def test_serve_stops_cleanly_on_sigterm():
    """``slidingserve serve`` as a supervisor runs it: up, then SIGTERM -> Serve and the local
    Ray shut down and the command exits 0 (the default SIGTERM action would kill the driver and
    leave the cluster running)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pytest

    pytest.importorskip("vllm")
    exe = Path(sys.executable).with_name("slidingserve")
    proc = subprocess.Popen([str(exe), "serve", "--port", "8765", "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        deadline = time.time() + 300
        assert proc.stdout is not None
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "serving; press Ctrl-C to stop" in line:
                break
        assert any("serving; press Ctrl-C" in x for x in lines), "".join(lines[-30:])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-2000:]
    assert "slidingserve: stopping" in out
