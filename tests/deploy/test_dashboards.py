"""Dashboards: the committed JSON is current, queries name real metrics, push speaks Grafana."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidingserve.serve.cli import serve_cli
from slidingserve.serve.dashboards import PROM, dashboards, render_text
from slidingserve.serve.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glsa_test_token"


def test_committed_dashboards_are_current():
    for name, board in dashboards().items():
        assert (ROOT / "manifests" / "grafana" / name).read_text() == render_text(board), (
            f"manifests/grafana/{name} is stale: run `slidingserve dashboards render`"
        )


def test_every_query_names_an_exported_metric_and_tiers_are_split():
    exprs = [t["expr"] for b in dashboards().values() for p in b["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(rf"{PROM}(slidingserve_[a-z_]+)", e)}
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert base <= set(METRIC_NAMES), base - set(METRIC_NAMES)
    assert set(METRIC_NAMES) <= base, f"metrics without a panel: {set(METRIC_NAMES) - base}"
    slo = dashboards()["slidingserve-slo.json"]
    titles = [p["title"] for p in slo["panels"]]
    assert "SLO attainment per tier" in titles
    assert all("tier" in t["expr"] for p in slo["panels"] for t in p["targets"][:1])


def test_attainment_counts_refused_requests_as_missed():
    slo = dashboards()["slidingserve-slo.json"]
    (panel,) = [p for p in slo["panels"] if p["title"] == "SLO attainment per tier"]
    expr = panel["targets"][0]["expr"]
    numerator, denominator = expr.split(" / ", 1)
    assert f"{PROM}slidingserve_slo_attained_total" in numerator
    assert f"{PROM}slidingserve_requests_total" in denominator
    assert re.search(rf'{PROM}slidingserve_rejected_total\{{status=~"[^"]*429', denominator)
    assert "slo_attained" not in denominator


class GrafanaCheckingHandler(BaseHTTPRequestHandler):
    """A local HTTP server that checks what a Grafana API client sends (``seen``: requests)."""

    seen: list

    def log_message(self, *args):  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((self.path, self.headers.get("authorization"), body))
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "invalid API key"})
        if self.path != "/api/dashboards/db":
            return self._reply(404, {"message": "not found"})
        board = body.get("dashboard", {})
        if not board.get("uid") or not board.get("panels") or body.get("overwrite") is not True:
            return self._reply(400, {"message": "bad dashboard payload"})
        uid = board["uid"]
        return self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x",
                                 "version": 1, "id": 1})


@pytest.fixture
def grafana():
    seen: list = []
    handler = type("Handler", (GrafanaCheckingHandler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_push_provisions_every_dashboard(grafana):
    url, seen = grafana
    result = CliRunner().invoke(serve_cli, ["dashboards", "push", "--url", url, "--token", TOKEN,
                                            "--folder-uid", "ops"])
    assert result.exit_code == 0, result.output
    assert {b["dashboard"]["uid"] for _, _, b in seen} == {"slidingserve-slo",
                                                           "slidingserve-engine"}
    assert all(path == "/api/dashboards/db" and b["folderUid"] == "ops" for path, _, b in seen)
    assert "pushed /d/slidingserve-slo/x" in result.output


def test_push_with_a_bad_token_fails_clearly(grafana):
    url, _ = grafana
    result = CliRunner().invoke(serve_cli, ["dashboards", "push", "--url", url, "--token", "nope"])
    assert result.exit_code == 1
    assert "refused dashboard" in result.output and "401" in result.output
    assert "nope" not in result.output
