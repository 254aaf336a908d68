"""Prometheus metrics of the application, through ``ray.util.metrics`` (tier-tagged).

Ray exports them on each node's metrics port with a ``ray_`` prefix, e.g.
``ray_slidingserve_ttft_seconds_bucket{tier="interactive",...}``. The Grafana dashboards in
``manifests/grafana/`` query exactly these names (``METRIC_NAMES``). The ingress also serves
them, merged over the cluster's nodes, on the serving port's ``/metrics`` (``scrape_cluster``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ray.util import metrics

LATENCY_BOUNDS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 10, 30, 60, 120, 600, 1800]
TPOT_BOUNDS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.4, 1.0]
CHUNK_BOUNDS = [16.0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
RATIO_BOUNDS = [0.25, 0.5, 0.67, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 4.0]

METRIC_NAMES = (
    "slidingserve_requests_total",
    "slidingserve_slo_attained_total",
    "slidingserve_rejected_total",
    "slidingserve_goodput_tokens_total",
    "slidingserve_output_tokens_total",
    "slidingserve_ttft_seconds",
    "slidingserve_tpot_seconds",
    "slidingserve_chunk_tokens",
    "slidingserve_predictor_ratio",
    "slidingserve_predictor_model_version",
    "slidingserve_predicted_ttft_seconds",
    "slidingserve_engine_kv_cache_usage",
    "slidingserve_engine_running_requests",
    "slidingserve_engine_waiting_requests",
    "slidingserve_engine_preemptions_total",
    "slidingserve_engine_prefix_cache_queries_total",
    "slidingserve_engine_prefix_cache_hits_total",
    "slidingserve_engine_prompt_tokens_total",
    "slidingserve_engine_generation_tokens_total",
)


class EngineMetrics:
    """Per-replica metrics: latencies, attainment, goodput, chunks, predictor health."""

    def __init__(self, replica: str):
        tier = ("tier",)
        self.replica = replica
        self.requests = metrics.Counter(
            "slidingserve_requests_total",
            description="Requests finished, by tier and outcome (ok, error, downgraded).",
            tag_keys=("tier", "outcome"),
        )
        self.attained = metrics.Counter(
            "slidingserve_slo_attained_total",
            description="Finished requests that met every target of their tier.",
            tag_keys=tier,
        )
        self.goodput = metrics.Counter(
            "slidingserve_goodput_tokens_total",
            description="Output tokens of requests that met their SLO.",
            tag_keys=tier,
        )
        self.tokens = metrics.Counter(
            "slidingserve_output_tokens_total", description="Output tokens.", tag_keys=tier
        )
        self.ttft = metrics.Histogram(
            "slidingserve_ttft_seconds",
            description="Time to first token from arrival at the ingress.",
            boundaries=LATENCY_BOUNDS_S,
            tag_keys=tier,
        )
        self.tpot = metrics.Histogram(
            "slidingserve_tpot_seconds",
            description="Mean time per output token after the first, per request.",
            boundaries=TPOT_BOUNDS_S,
            tag_keys=tier,
        )
        self.chunk = metrics.Histogram(
            "slidingserve_chunk_tokens",
            description="Prefill tokens scheduled per engine step (chosen chunk size).",
            boundaries=CHUNK_BOUNDS,
            tag_keys=("replica",),
        )
        self.pred_error = metrics.Histogram(
            "slidingserve_predictor_ratio",
            description="Predicted / measured engine step time (1 = exact).",
            boundaries=RATIO_BOUNDS,
            tag_keys=("replica",),
        )
        self.model_version = metrics.Gauge(
            "slidingserve_predictor_model_version",
            description="Latency-model version a replica uses (-1: none yet).",
            tag_keys=("replica",),
        )
        self.predicted_ttft = metrics.Gauge(
            "slidingserve_predicted_ttft_seconds",
            description="Predicted TTFT of a new request per tier on this replica.",
            tag_keys=("replica", "tier"),
        )
        self.model_version.set(-1, tags={"replica": replica})
        self.engine = VLLMEngineMetrics(replica)

    def finished(
        self, tier: str, outcome: str, ttft_s: float | None, tpot_s: float | None,
        n_out: int, attained: bool,
    ) -> None:
        tags = {"tier": tier}
        self.requests.inc(1, tags={"tier": tier, "outcome": outcome})
        if ttft_s is not None:
            self.ttft.observe(ttft_s, tags=tags)
        if tpot_s is not None:
            self.tpot.observe(tpot_s, tags=tags)
        if n_out:
            self.tokens.inc(n_out, tags=tags)
        if attained:
            self.attained.inc(1, tags=tags)
            if n_out:
                self.goodput.inc(n_out, tags=tags)

    def step(self, prefill_tokens: int, predicted_s: float | None, measured_s: float) -> None:
        tags = {"replica": self.replica}
        if prefill_tokens > 0:
            self.chunk.observe(prefill_tokens, tags=tags)
        if predicted_s is not None and measured_s > 0:
            self.pred_error.observe(predicted_s / measured_s, tags=tags)


class VLLMEngineMetrics:
    """vLLM's own engine state per replica, as ``vllm.v1.metrics`` reports it each step (fed by
    ``serve.engine_stats.EngineStatLogger``): KV-cache use, running and waiting requests,
    preemptions, prefix-cache hits, prompt and generated tokens."""

    def __init__(self, replica: str):
        rep = ("replica",)
        self.tags = {"replica": replica}
        self.kv_usage = metrics.Gauge(
            "slidingserve_engine_kv_cache_usage",
            description="Fraction of the engine's KV-cache blocks in use (0-1).", tag_keys=rep,
        )
        self.running = metrics.Gauge(
            "slidingserve_engine_running_requests",
            description="Requests the engine holds KV for (vLLM's running set).", tag_keys=rep,
        )
        self.waiting = metrics.Gauge(
            "slidingserve_engine_waiting_requests",
            description="Requests waiting in the engine (new or preempted).", tag_keys=rep,
        )
        self.preemptions = metrics.Counter(
            "slidingserve_engine_preemptions_total",
            description="Requests preempted by the engine's scheduler.", tag_keys=rep,
        )
        self.prefix_queries = metrics.Counter(
            "slidingserve_engine_prefix_cache_queries_total",
            description="Prompt tokens looked up in the prefix cache when a request is admitted.",
            tag_keys=rep,
        )
        self.prefix_hits = metrics.Counter(
            "slidingserve_engine_prefix_cache_hits_total",
            description="Prompt tokens found in the prefix cache when a request is admitted.",
            tag_keys=rep,
        )
        self.prompt_tokens = metrics.Counter(
            "slidingserve_engine_prompt_tokens_total",
            description="Prompt tokens of prefilled requests, by source (computed or cached).",
            tag_keys=("replica", "source"),
        )
        self.generation_tokens = metrics.Counter(
            "slidingserve_engine_generation_tokens_total",
            description="Tokens the engine generated.", tag_keys=rep,
        )

    def scheduler_state(self, running: int, waiting: int, kv_usage: float,
                        prefix_queries: int, prefix_hits: int) -> None:
        """One step's scheduler state (vLLM's ``SchedulerStats``)."""
        tags = self.tags
        self.running.set(running, tags=tags)
        self.waiting.set(waiting, tags=tags)
        self.kv_usage.set(kv_usage, tags=tags)
        if prefix_queries:
            self.prefix_queries.inc(prefix_queries, tags=tags)
        if prefix_hits:
            self.prefix_hits.inc(prefix_hits, tags=tags)

    def iteration(self, preemptions: int, prompt_computed: int, prompt_cached: int,
                  generated: int) -> None:
        """One batch of engine outputs (vLLM's ``IterationStats``)."""
        tags = self.tags
        if preemptions:
            self.preemptions.inc(preemptions, tags=tags)
        if prompt_computed:
            self.prompt_tokens.inc(prompt_computed, tags={**tags, "source": "computed"})
        if prompt_cached:
            self.prompt_tokens.inc(prompt_cached, tags={**tags, "source": "cached"})
        if generated:
            self.generation_tokens.inc(generated, tags=tags)


class IngressMetrics:
    """Ingress-side counters: refusals by tier and status."""

    def __init__(self) -> None:
        self.rejected = metrics.Counter(
            "slidingserve_rejected_total",
            description="Requests refused at the ingress, by tier and HTTP status.",
            tag_keys=("tier", "status"),
        )

    def refused(self, tier: str, status: int) -> None:
        self.rejected.inc(1, tags={"tier": tier, "status": str(status)})


async def scrape_cluster(timeout_s: float = 5.0) -> str:
    """Every live node's Prometheus text (Ray's metrics export port), merged into one
    exposition: what the ingress serves on ``/metrics``. A node that does not answer in
    ``timeout_s`` is left out."""
    import httpx
    import ray

    nodes = await asyncio.to_thread(ray.nodes)
    urls = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in nodes if n.get("Alive") and n.get("MetricsExportPort")]
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        got = await asyncio.gather(*(client.get(u) for u in urls), return_exceptions=True)
    return merge_expositions(r.text for r in got
                             if isinstance(r, httpx.Response) and r.status_code == 200)


def merge_expositions(texts: Iterable[str]) -> str:
    """Prometheus texts of several nodes as one: each family's ``# HELP``/``# TYPE`` once and
    its samples together (the format wants them contiguous), duplicate sample lines once."""
    headers: dict[str, dict[str, str]] = {}
    samples: dict[str, dict[str, None]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(maxsplit=3)
                family = parts[2]
                headers.setdefault(family, {}).setdefault(parts[1], line)
                samples.setdefault(family, {})
            elif line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                key = family if family and name.startswith(family) else name
                samples.setdefault(key, {})[line] = None
    out = []
    for family, lines in samples.items():
        out += [headers.get(family, {}).get(k, "") for k in ("HELP", "TYPE")]
        out += list(lines)
    return "\n".join(x for x in out if x) + "\n"
