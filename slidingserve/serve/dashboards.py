"""Grafana dashboards for the application's metrics, and pushing them with ``grafana-client``.

``dashboards()`` builds the dashboard JSON from the metric names in ``serve.metrics`` (Ray
exports them with a ``ray_`` prefix); ``manifests/grafana/*.json`` are its rendered output
(``slidingserve dashboards render``; a test checks they are current). ``push`` provisions them
into a Grafana through its HTTP API (``POST /api/dashboards/db``, overwrite).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROM = "ray_"  # Ray's exporter prefixes every application metric
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


def _q(name: str) -> str:
    return PROM + name


def _quantiles(metric: str, by: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({_q(metric)}_bucket{RATE})))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.9, 0.99)
    )


REFUSED = '{status=~"429|503"}'  # refused for load (429) or with no engine to serve (503)


def _attainment() -> str:
    """Attained / (finished + refused) per tier. Each side falls back to zeros where a tier
    has no series of it yet, so a tier with only refusals shows 0, not a gap."""
    attained = f"sum by (tier) (rate({_q('slidingserve_slo_attained_total')}{RATE}))"
    finished = f"sum by (tier) (rate({_q('slidingserve_requests_total')}{RATE}))"
    refused = f"sum by (tier) (rate({_q('slidingserve_rejected_total')}{REFUSED}{RATE}))"
    return (f"({attained} or ({finished} or {refused}) * 0) / "
            f"(({finished} or {refused} * 0) + ({refused} or {finished} * 0))")


SLO_PANELS = (
    Panel(
        "SLO attainment per tier",
        ((_attainment(), "{{tier}}"),),
        unit="percentunit",
        description="Requests that met every target of their tier, over requests finished "
        "plus requests refused (429: load; 503: no engine): a refused request did not "
        "attain its SLO. A prompt of a multi-prompt completion counts as one request when "
        "finished; a refused call counts once.",
    ),
    Panel("TTFT per tier (quantiles)", _quantiles("slidingserve_ttft_seconds", "tier"), "s"),
    Panel(
        "TTFT histogram per tier",
        ((f"sum by (le, tier) (increase({_q('slidingserve_ttft_seconds_bucket')}{RATE}))",
          "{{tier}} le={{le}}"),),
        kind="heatmap",
    ),
    Panel("TPOT per tier (quantiles)", _quantiles("slidingserve_tpot_seconds", "tier"), "s"),
    Panel(
        "TPOT histogram per tier",
        ((f"sum by (le, tier) (increase({_q('slidingserve_tpot_seconds_bucket')}{RATE}))",
          "{{tier}} le={{le}}"),),
        kind="heatmap",
    ),
    Panel(
        "Goodput (tokens/s of requests that met their SLO)",
        ((f"sum by (tier) (rate({_q('slidingserve_goodput_tokens_total')}{RATE}))", "{{tier}}"),
         (f"sum(rate({_q('slidingserve_output_tokens_total')}{RATE}))", "all output tokens")),
        unit="short",
    ),
    Panel(
        "429s and other refusals",
        ((f"sum by (tier) (rate({_q('slidingserve_rejected_total')}{{status=\"429\"}}{RATE}))",
          "429 {{tier}}"),
         (f"sum by (status) (rate({_q('slidingserve_rejected_total')}{{status!=\"429\"}}{RATE}))",
          "{{status}}")),
        unit="reqps",
    ),
)

ENGINE_PANELS = (
    Panel("Chosen chunk sizes (prefill tokens per step)",
          _quantiles("slidingserve_chunk_tokens", "replica")),
    Panel(
        "Predictor error (predicted / measured step time)",
        _quantiles("slidingserve_predictor_ratio", "replica"),
        description="1.0 = exact; above 1 the model over-predicts.",
    ),
    Panel("Latency-model version per replica",
          ((f"max by (replica) ({_q('slidingserve_predictor_model_version')})", "{{replica}}"),)),
    Panel("Predicted TTFT of a new request",
          ((f"max by (replica, tier) ({_q('slidingserve_predicted_ttft_seconds')})",
            "{{replica}} {{tier}}"),), "s"),
    Panel("KV-cache usage per replica",
          ((f"max by (replica) ({_q('slidingserve_engine_kv_cache_usage')})", "{{replica}}"),),
          "percentunit", description="vLLM's share of KV-cache blocks in use."),
    Panel("Running and waiting requests per replica",
          ((f"max by (replica) ({_q('slidingserve_engine_running_requests')})",
            "running {{replica}}"),
           (f"max by (replica) ({_q('slidingserve_engine_waiting_requests')})",
            "waiting {{replica}}"))),
    Panel("Preemptions per replica",
          ((f"sum by (replica) (rate({_q('slidingserve_engine_preemptions_total')}{RATE}))",
            "{{replica}}"),), "reqps"),
    Panel("Prefix-cache hit rate per replica",
          ((f"sum by (replica) (rate({_q('slidingserve_engine_prefix_cache_hits_total')}{RATE}))"
            f" / sum by (replica) "
            f"(rate({_q('slidingserve_engine_prefix_cache_queries_total')}{RATE}))",
            "{{replica}}"),), "percentunit",
          description="Prompt tokens found in the prefix cache over those looked up."),
    Panel("Engine tokens per second",
          ((f"sum by (replica, source) "
            f"(rate({_q('slidingserve_engine_prompt_tokens_total')}{RATE}))",
            "prompt {{source}} {{replica}}"),
           (f"sum by (replica) "
            f"(rate({_q('slidingserve_engine_generation_tokens_total')}{RATE}))",
            "generated {{replica}}"))),
)


def _panel(p: Panel, i: int) -> dict[str, Any]:
    return {
        "id": i + 1,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend,
             **({"format": "heatmap"} if p.kind == "heatmap" else {})}
            for j, (expr, legend) in enumerate(p.exprs)
        ],
    }


def _dashboard(uid: str, title: str, panels: tuple[Panel, ...]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["slidingserve"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "panels": [_panel(p, i) for i, p in enumerate(panels)],
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "slidingserve-slo.json": _dashboard("slidingserve-slo", "SlidingServe: SLOs", SLO_PANELS),
        "slidingserve-engine.json": _dashboard(
            "slidingserve-engine", "SlidingServe: engine and predictor", ENGINE_PANELS
        ),
    }


def render_text(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def render(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, board in dashboards().items():
        path = out_dir / name
        path.write_text(render_text(board))
        paths.append(path)
    return paths


class DashboardPushError(RuntimeError):
    """Grafana refused a dashboard (or could not be reached); the message says which and why."""


def push(url: str, token: str, boards: dict[str, dict[str, Any]], folder_uid: str | None = None,
         timeout_s: float = 10.0) -> list[str]:
    """Create or overwrite ``boards`` in the Grafana at ``url``; returns their Grafana URLs."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    out: list[str] = []
    for name, board in boards.items():
        body: dict[str, Any] = {"dashboard": board, "overwrite": True,
                                "message": "provisioned by slidingserve"}
        if folder_uid:
            body["folderUid"] = folder_uid
        try:
            res = api.dashboard.update_dashboard(body)
        except GrafanaException as exc:
            raise DashboardPushError(
                f"grafana at {url} refused dashboard {name} (uid {board['uid']}): "
                f"HTTP {exc.status_code}: {exc.message}"
            ) from None
        except Exception as exc:  # connection errors and the like
            raise DashboardPushError(f"grafana at {url}: cannot push {name}: {exc}") from None
        out.append(str(res.get("url", board["uid"])))
    return out


def load_dir(path: Path) -> dict[str, dict[str, Any]]:
    files = sorted(path.glob("*.json"))
    if not files:
        raise DashboardPushError(f"no dashboard *.json files in {str(path)!r}")
    return {f.name: json.loads(f.read_text()) for f in files}
