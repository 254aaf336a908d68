"""The two Ray Serve deployments: ``Engine`` (one AsyncLLM per replica) and ``Ingress``.

Both take the application's config as a plain dict (it travels through ``serve deploy``
YAML) and validate it again in the replica. ``Engine.record_routing_stats`` is what Ray
Serve polls for the slack router; ``Engine.generate`` streams ``StreamEvent``s.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import EngineHost, resolve_model
from slidingserve.serve.health import EngineReadiness
from slidingserve.serve.ingress import IngressService, build_api
from slidingserve.serve.messages import GenerateRequest, StreamEvent
from slidingserve.slo.tiers import load_tiers

log = logging.getLogger("ray.serve")


class EngineReplica:
    """One vLLM engine replica."""

    async def __init__(self, config: dict[str, Any]):  # type: ignore[misc]
        cfg = load_serve_config(config, "Engine config")
        replica = serve.get_replica_context().replica_id.unique_id
        self.host = EngineHost(cfg, load_tiers(cfg.tiers_path), replica)
        await self.host.start()
        self.link: Any = None
        if cfg.predictor.enabled:
            from slidingserve.serve.predictor_link import PredictorLink

            self.link = PredictorLink(cfg.predictor, self.host)
            self.link.start()

    async def generate(self, req: GenerateRequest) -> AsyncIterator[StreamEvent]:
        async for ev in self.host.generate(req):
            yield ev

    def record_routing_stats(self) -> dict[str, Any]:
        return self.host.load().to_stats()

    def replica_info(self) -> dict[str, Any]:
        """Which replica answered, its load and its latency-model version (for operators)."""
        return {"replica": self.host.replica, "model_version": self.host.model_version,
                "load": self.host.load().to_stats(),
                "samples_sent": self.link.samples_sent if self.link is not None else None}

    async def check_health(self) -> None:
        await self.host.check_health()

    def __del__(self) -> None:
        if getattr(self, "link", None) is not None:
            self.link.stop()
        if getattr(self, "host", None) is not None:
            self.host.shutdown()


@serve.ingress()
class IngressReplica:
    """OpenAI-compatible HTTP front door."""

    def __init__(self, engine: DeploymentHandle, config: dict[str, Any]):
        from transformers import AutoTokenizer

        from slidingserve.serve.metrics import scrape_cluster
        from slidingserve.serve.openai_api import generation_defaults

        cfg = load_serve_config(config, "Ingress config")
        model = resolve_model(cfg.engine)
        tokenizer = AutoTokenizer.from_pretrained(cfg.engine.tokenizer or model)
        ready = EngineReadiness(serve.get_replica_context().app_name)  # /health: 503 until then
        defaults = generation_defaults(model, cfg.engine.extra_engine_args)
        if defaults:
            log.info("ingress: sampling defaults from the model's generation config: %s",
                     defaults)
        self.service = IngressService(cfg, load_tiers(cfg.tiers_path), engine, tokenizer, ready,
                                      defaults, scrape_cluster)
        self.replica = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self.service, self.replica)


Engine: Deployment = serve.deployment(name="Engine")(EngineReplica)
Ingress: Deployment = serve.deployment(name="Ingress")(IngressReplica)
