"""Routers: which replica gets an arriving request. A registry of small classes, like policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import (
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    N_FEATURES,
    decode_features,
)
from slidingserve.sim.replica import Replica
from slidingserve.sim.request import SimRequest


class Router(ABC):
    name: ClassVar[str]

    def __init__(self, latency: LatencyModel):
        self.latency = latency

    @abstractmethod
    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        """Index of the replica that takes ``req``."""


_ROUTERS: dict[str, type[Router]] = {}


def register_router(name: str) -> Callable[[type[Router]], type[Router]]:
    def deco(cls: type[Router]) -> type[Router]:
        cls.name = name
        _ROUTERS[name] = cls
        return cls

    return deco


def router_names() -> list[str]:
    return sorted(_ROUTERS)


def make_router(name: str, latency: LatencyModel) -> Router:
    try:
        return _ROUTERS[name](latency)
    except KeyError:
        raise ValueError(f"unknown router {name!r} (known: {', '.join(router_names())})") from None


@register_router("round-robin")
class RoundRobin(Router):
    def __init__(self, latency: LatencyModel):
        super().__init__(latency)
        self._next = 0

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


@register_router("least-loaded")
class LeastLoaded(Router):
    """Fewest outstanding requests; ties go to fewer queued prefill tokens, then lower index."""

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        return min(
            range(len(replicas)),
            key=lambda i: (replicas[i].outstanding, replicas[i].queued_prefill_tokens(), i),
        )


@register_router("slo-aware")
class SloAware(Router):
    """Most predicted TTFT slack.

    Predicted first-token time on a replica = the rest of its step in flight + one step that
    runs its decodes plus all queued prefill tokens and this prompt (the latency model's view
    of the work ahead of the request). Slack = TTFT deadline - now - that. Highest slack wins;
    ties go to fewer outstanding requests.
    """

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        X = np.zeros((len(replicas), N_FEATURES), dtype=np.float64)
        busy = np.zeros(len(replicas), dtype=np.float64)
        for i, rep in enumerate(replicas):
            ctx = [v.num_computed + 1 for v in rep.running]
            queued = rep.queued_prefill_tokens() + req.view.prompt_len
            X[i] = decode_features(ctx)
            X[i, F_PREFILL_TOKENS] = queued
            X[i, F_PREFILL_REQS] = 1 + len(rep.waiting)
            X[i, F_PREFILL_ATTN] = queued * queued / 2.0
            X[i, F_TOTAL_TOKENS] += queued
            busy[i] = max(rep.step_end_s - now, 0.0) if rep.busy else 0.0
        predicted = busy + self.latency.predict_features(X)
        slack = req.view.ttft_deadline() - now - predicted
        return min(range(len(replicas)), key=lambda i: (-slack[i], replicas[i].outstanding, i))
