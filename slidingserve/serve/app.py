"""The application builder: ``import_path: slidingserve.serve.app:build`` in a Serve config.

``build(args)`` validates ``args`` as a ``ServeAppConfig`` and returns the bound application
(Ingress -> Engine), with the slack router on the Engine deployment (``engine_options``: fixed
or autoscaled replicas, one placement group per tensor-parallel replica) and the replicas
placed as ``placement`` says (custom resources, replicas per node).
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from slidingserve.serve.config import ServeAppConfig, load_serve_config
from slidingserve.serve.deployments import Engine, Ingress

ROUTER_CLASS = "slidingserve.serve.router.SlackRouter"


def router_config(cfg: ServeAppConfig) -> dict[str, Any]:
    """The Engine deployment's ``request_router_config`` (validated by Ray's model)."""
    out: dict[str, Any] = {
        "request_routing_stats_period_s": cfg.router.stats_period_s,
        "request_routing_stats_timeout_s": max(cfg.router.stats_period_s * 4, 2.0),
    }
    if cfg.router.enabled:
        out["request_router_class"] = ROUTER_CLASS
        out["request_router_kwargs"] = {"stale_after_s": cfg.router.stale_after_s}
    RequestRouterConfig(**out)  # fail here, naming the field, rather than in the controller
    return out


def engine_options(cfg: ServeAppConfig) -> dict[str, Any]:
    """The Engine deployment's options: replicas (fixed or autoscaled) and resources.

    A tensor-parallel replica (``tensor_parallel_size`` = tp > 1) reserves a placement group
    of tp one-GPU bundles; the replica actor itself runs in the first bundle (its CPUs) and
    vLLM's Ray executor places one worker per GPU bundle."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": cfg.engine_max_ongoing,
        "request_router_config": router_config(cfg),
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
    }
    if cfg.autoscaling_config is not None:
        opts["autoscaling_config"] = cfg.autoscaling_config
    else:
        opts["num_replicas"] = cfg.num_replicas
    if cfg.placement.max_engine_replicas_per_node is not None:
        opts["max_replicas_per_node"] = cfg.placement.max_engine_replicas_per_node
    actor: dict[str, Any] = {"num_cpus": cfg.engine_num_cpus}
    resources = dict(cfg.placement.engine_resources)  # custom resources (placement)
    tp = cfg.engine.tensor_parallel_size
    if tp > 1:
        opts["placement_group_bundles"] = [
            {"CPU": cfg.engine_num_cpus, "GPU": 1.0, **resources},
            *({"GPU": 1.0} for _ in range(tp - 1)),
        ]
        opts["placement_group_strategy"] = cfg.engine_placement_strategy
    else:
        if cfg.engine_num_gpus:
            actor["num_gpus"] = cfg.engine_num_gpus
        if resources:
            actor["resources"] = resources
    opts["ray_actor_options"] = actor
    return opts


def build_app(cfg: ServeAppConfig) -> Application:
    data = cfg.model_dump(mode="json")
    ingress: dict[str, Any] = {"num_cpus": 0}
    if cfg.placement.ingress_resources:
        ingress["resources"] = dict(cfg.placement.ingress_resources)
    engine = Engine.options(**engine_options(cfg))
    return Ingress.options(
        num_replicas=cfg.ingress_replicas,
        max_ongoing_requests=cfg.ingress_max_ongoing_requests,
        ray_actor_options=ingress,
    ).bind(engine.bind(data), data)


def build(args: dict[str, Any]) -> Application:
    """Serve application builder (``serve run slidingserve.serve.app:build key=value``)."""
    return build_app(load_serve_config(args, "application args"))
