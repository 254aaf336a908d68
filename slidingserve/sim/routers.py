"""Routers: which replica gets an arriving request. A registry of small classes, like policies.

A router sees the replicas that are alive (a failed one is left out) and returns a position in
that sequence. It reads each replica through ``Replica.load()`` (a snapshot cached until the
replica changes, so a router over 64 replicas does not rescan every queue per arrival) and,
when it predicts time, through the replica's own latency model (``Replica.latency``): in a
heterogeneous fleet a slow replica's model says it is slow. Random routers draw from their
own seeded generator: same seed, same choices.

Registered (``router_names()``):
  * ``round-robin``: replicas in turn;
  * ``least-loaded``: fewest outstanding requests;
  * ``pow2``: Ray Serve's default (``PowerOfTwoChoicesRequestRouter``): two distinct replicas
    sampled uniformly at random, the one with the shorter queue (requests queued + running)
    wins, a tie goes to the first sampled (Ray sorts the pair stably in sampled order);
  * ``least-work``: least outstanding work in tokens (queued prefill tokens + one decode token
    per running request), hardware-agnostic;
  * ``slack`` (alias ``slo-aware``): most predicted TTFT slack, from each replica's own
    latency model, counting the queued work of the request's tier and higher ones (the
    engine serves those first), as the Ray Serve router does; a request of a tier with an
    end-to-end deadline goes to the fewest outstanding requests among the replicas predicted
    to meet its TTFT target.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import (
    F_DECODE_CTX_MAX,
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    N_FEATURES,
)
from slidingserve.sim.replica import Replica
from slidingserve.sim.request import SimRequest


class Router(ABC):
    name: ClassVar[str]

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abstractmethod
    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        """Position in ``replicas`` (the live ones, non-empty) of the replica that takes ``req``."""


_ROUTERS: dict[str, type[Router]] = {}


def register_router(*names: str) -> Callable[[type[Router]], type[Router]]:
    """Register a router under its name (the first) and any aliases."""

    def deco(cls: type[Router]) -> type[Router]:
        cls.name = names[0]
        for name in names:
            _ROUTERS[name] = cls
        return cls

    return deco


def router_names() -> list[str]:
    """Every registered name, aliases included."""
    return sorted(_ROUTERS)


def make_router(name: str, seed: int = 0) -> Router:
    try:
        cls = _ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r} (known: {', '.join(router_names())})") from None
    return cls(seed)


@register_router("round-robin")
class RoundRobin(Router):
    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._next = 0

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


@register_router("least-loaded")
class LeastLoaded(Router):
    """Fewest outstanding requests; ties go to fewer queued prefill tokens, then lower index."""

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        loads = [rep.load() for rep in replicas]
        return min(
            range(len(replicas)),
            key=lambda i: (loads[i].outstanding, loads[i].queued_prefill_tokens, i),
        )


@register_router("pow2")
class PowerOfTwo(Router):
    """Ray Serve's default router: the shorter queue of two distinct random replicas.

    Sampling as Ray's ``choose_replicas``: ``i`` uniform in [0, n), ``j`` uniform in
    [0, n - 1) shifted past ``i`` (every ordered pair equally likely); with two replicas, a
    random order. Queue length = requests the replica holds (queued + running), Ray's
    ``num_ongoing_requests``; the first sampled wins a tie.
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._rng = random.Random(seed)

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        return j if replicas[j].outstanding < replicas[i].outstanding else i


@register_router("least-work")
class LeastWork(Router):
    """Least outstanding work in tokens: queued prefill tokens (waiting prompts, preempted
    recomputes, unfinished chunks) + one per running request (its next decode token). Output
    lengths are unknown to a router, and tokens are hardware-agnostic: this is what a router
    without a latency model can balance. Ties: fewer outstanding requests, then lower index."""

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        loads = [rep.load() for rep in replicas]
        return min(
            range(len(replicas)),
            key=lambda i: (
                loads[i].queued_prefill_tokens + loads[i].running,
                loads[i].outstanding,
                i,
            ),
        )


@register_router("slack", "slo-aware")
class Slack(Router):
    """Most predicted TTFT slack.

    Predicted first-token time on a replica = the rest of its step in flight + one step that
    runs its decodes plus the queued prefill tokens of requests at the request's priority or
    higher (``ReplicaLoad.tokens_ahead``: the policies serve higher tiers first, so deferred
    batch work does not stand in front of an interactive request) and this prompt, timed by
    that replica's own latency model (its view of the work ahead of the request). Slack =
    TTFT deadline - now - that. Highest slack wins; ties go to fewer outstanding requests,
    then lower index.

    Tiers with an end-to-end deadline (QoServe's standard and batch: 600 s / 1800 s) are
    served by the policies within that window, behind the first-token tiers, so their
    predicted first-token time says little about whether they finish in time: such a request
    goes to the replica with the fewest outstanding requests among those predicted to meet
    its TTFT target (ties: lower index), and to the most slack when none is. Routing them by
    slack as well sent them to the replicas with the least queued work ahead, the slow
    replicas of a mixed fleet, which then held half the requests and their decodes with a
    third of the fleet's speed (16 heterogeneous replicas: 0.94x Ray Serve's ``pow2`` at
    the 90% criterion; docs in deploy/README.md).
    Per arrival: one vectorised prediction per distinct latency model (two in a heterogeneous
    fleet); the prompt-independent columns are kept per replica and refreshed only for the
    replicas that changed since the last arrival (``Replica.version``).
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._fleet: tuple[int, ...] = ()  # replica indices the cached columns describe

    def _refresh(self, replicas: Sequence[Replica]) -> None:
        fleet = tuple(rep.index for rep in replicas)
        if fleet != self._fleet:
            n = len(replicas)
            self._fleet = fleet
            self._versions = [-1] * n
            self._base = np.zeros((n, N_FEATURES), dtype=np.float64)  # decodes + queued
            self._queued = np.zeros((n, 1), dtype=np.float64)  # per priority (columns)
            self._outstanding = np.zeros(n, dtype=np.float64)
            self._step_end = np.zeros(n, dtype=np.float64)  # end of the step in flight, or 0
            groups: dict[int, tuple[LatencyModel, list[int]]] = {}
            for i, rep in enumerate(replicas):
                groups.setdefault(id(rep.latency), (rep.latency, []))[1].append(i)
            self._groups = [(m, np.array(idx)) for m, idx in groups.values()]
        versions = self._versions
        for i, rep in enumerate(replicas):
            if versions[i] == rep.version:
                continue
            versions[i] = rep.version
            load = rep.load()
            row = self._base[i]
            row[F_DECODE_REQS] = load.running
            row[F_DECODE_CTX_SUM] = load.decode_ctx_sum
            row[F_DECODE_CTX_MAX] = load.decode_ctx_max
            row[F_PREFILL_REQS] = 1 + load.waiting
            row[F_TOTAL_TOKENS] = load.running
            by_priority = load.queued_by_priority
            if len(by_priority) > self._queued.shape[1]:
                self._queued = _widen(self._queued, len(by_priority))
            self._queued[i] = 0.0
            self._queued[i, : len(by_priority)] = by_priority
            self._outstanding[i] = load.outstanding
            self._step_end[i] = rep.step_end_s if rep.busy else 0.0

    def route(self, req: SimRequest, replicas: Sequence[Replica], now: float) -> int:
        self._refresh(replicas)
        n = len(replicas)
        ahead = self._queued[:, : req.view.tier.priority + 1].sum(axis=1)
        queued = ahead + req.view.prompt_len
        X = self._base.copy()
        X[:, F_PREFILL_TOKENS] = queued
        X[:, F_PREFILL_ATTN] = queued * queued / 2.0
        X[:, F_TOTAL_TOKENS] += queued
        predicted = np.empty(n, dtype=np.float64)
        for model, idx in self._groups:
            predicted[idx] = model.predict_features(X if len(self._groups) == 1 else X[idx])
        busy = np.maximum(self._step_end - now, 0.0)
        slack = req.view.ttft_deadline() - now - (busy + predicted)
        if req.view.tier.e2e_s is not None:
            feasible = np.flatnonzero(slack >= 0.0)
            if len(feasible):  # fewest outstanding, then lowest position
                return int(feasible[np.lexsort((feasible, self._outstanding[feasible]))[0]])
        # Highest slack, then fewest outstanding, then lowest position (lexsort: last key first).
        return int(np.lexsort((np.arange(n), self._outstanding, -slack))[0])


def _widen(a: np.ndarray, columns: int) -> np.ndarray:
    out = np.zeros((a.shape[0], columns), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out
