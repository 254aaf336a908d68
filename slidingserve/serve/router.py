"""SLO-slack request router for the ingress -> engine hop.

Idea: every engine replica reports a ``ReplicaLoad`` (queue, waiting prefill tokens per
priority, predicted cost per token) as its Ray Serve routing stats. For a request of tier T
with prompt length L the router predicts the TTFT it would see on each replica and ranks
replicas by slack (T's TTFT target minus that prediction), most slack first; a tier with an
end-to-end deadline (served within that window, behind the first-token tiers) ranks the
replicas predicted to meet its TTFT target by queue length instead, shortest first, as the
simulator's ``slack`` router does (``slidingserve/sim/routers.py`` says why). Every
replica that still takes T comes first (admission refuses the lowest tiers first when a
replica holds too many requests, and lower tiers while a higher one is falling behind:
``ReplicaLoad.refuses``). Between stats reports it adds the prompts it has itself sent to a
replica since that replica's snapshot, so a burst does not pile onto the replica that looked
emptiest a moment ago.

A request that a replica failed before its first token is resent with that replica in
``GenerateRequest.avoid``: the router leaves it out while another candidate is left (Serve
may not have noticed the death yet, and a dead replica's last stats look idle).

Fallback: when any candidate's stats are missing or older than ``stale_after_s`` (or the
call carries no ``GenerateRequest``), it behaves as power-of-two-choices: two random
candidates, of which Serve picks the shorter queue.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

from slidingserve.serve.load import ReplicaLoad
from slidingserve.serve.messages import GenerateRequest

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """What the router needs to know about one request."""

    priority: int
    ttft_target_s: float
    prompt_len: int  # prefill tokens (the prompt once per choice)
    end_to_end: bool = False  # the tier has an end-to-end deadline: balance queues


def rank_by_slack(
    loads: Sequence[tuple[K, ReplicaLoad]],
    query: RouteQuery,
    routed_tokens: dict[K, int] | None = None,
    routed_requests: dict[K, int] | None = None,
) -> list[K]:
    """Replica keys ordered by predicted slack for ``query``, most slack first; replicas that
    would refuse the query's tier (full for it, or behind on a higher tier) go last. For an
    end-to-end tier, the replicas predicted to meet its TTFT target come first, shortest
    queue first (then most slack), then the others by slack.

    Ties go to the shorter queue. ``routed_tokens``/``routed_requests``: prompt tokens and
    requests sent to each replica that its last snapshot does not include yet.
    """
    extra, sent = routed_tokens or {}, routed_requests or {}

    def order(item: tuple[K, ReplicaLoad]) -> tuple[bool, bool, int, float, int]:
        key, load = item
        slack = load.slack_s(query.priority, query.ttft_target_s, query.prompt_len,
                             extra.get(key, 0), sent.get(key, 0))
        refuses = load.refuses(query.priority, sent.get(key, 0))
        queue = load.queue_len + sent.get(key, 0)
        if query.end_to_end and slack >= 0.0:
            return (refuses, False, queue, -slack, load.queue_len)
        return (refuses, query.end_to_end, 0, -slack, load.queue_len)

    return [key for key, _ in sorted(loads, key=order)]


def query_of(pending: PendingRequest | None) -> RouteQuery | None:
    """The routing query of a pending ``Engine.generate`` call, else None."""
    if pending is None or not pending.args:
        return None
    req = pending.args[0]
    if not isinstance(req, GenerateRequest):
        return None
    return RouteQuery(req.slo.priority, req.slo.ttft_s, req.prefill_tokens,
                      end_to_end=req.slo.e2e_s is not None)


def without_avoided(replicas: list[RunningReplica],
                    pending: PendingRequest | None) -> list[RunningReplica]:
    """``replicas`` less those the pending request's ``avoid`` names, unless none is left."""
    req = pending.args[0] if pending is not None and pending.args else None
    if not isinstance(req, GenerateRequest) or not req.avoid:
        return replicas
    kept = [r for r in replicas if r.replica_id.unique_id not in req.avoid]
    return kept or replicas


class SlackRouter(FIFOMixin, RequestRouter):
    """Ray Serve request router: most predicted TTFT slack first, p2c when stats are stale."""

    def initialize_state(self, stale_after_s: float = 3.0, seed: int | None = None, **_: Any):
        self._stale_after_s = float(stale_after_s)
        self._rng = random.Random(seed)
        # replica -> {request: (wall time routed, prompt tokens)} not yet in its snapshot
        self._routed: dict[ReplicaID, dict[str, tuple[float, int]]] = defaultdict(dict)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        candidate_replicas = without_avoided(candidate_replicas, pending_request)
        if not candidate_replicas:
            return []
        query = query_of(pending_request)
        loads = self._fresh_loads(candidate_replicas)
        if query is None or loads is None:
            return [self._two_choices(candidate_replicas)]
        by_id = {r.replica_id: r for r in candidate_replicas}
        routed = self._routed_tokens(loads)
        counts = {rid: len(self._routed.get(rid, {})) for rid in loads}
        ranked = rank_by_slack(list(loads.items()), query, routed, counts)
        self._note(pending_request, ranked[0], query.prompt_len)
        return [[by_id[rid]] for rid in ranked]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        """Serve confirms the replica (only with its rejection protocol on): fix the note."""
        query = query_of(pending_request)
        if query is not None:
            self._note(pending_request, replica_id, query.prompt_len)

    # ---- helpers ------------------------------------------------------------------------
    def _fresh_loads(self, replicas: list[RunningReplica]) -> dict[ReplicaID, ReplicaLoad] | None:
        now = time.time()
        loads: dict[ReplicaID, ReplicaLoad] = {}
        for r in replicas:
            load = ReplicaLoad.from_stats(r.routing_stats)
            if load is None or load.age_s(now) > self._stale_after_s:
                return None
            loads[r.replica_id] = load
        return loads

    def _note(self, pending: PendingRequest | None, replica: ReplicaID, tokens: int) -> None:
        """Count ``tokens`` against ``replica`` until its next snapshot (once per request)."""
        if pending is None:
            return
        key = pending.metadata.internal_request_id
        for notes in self._routed.values():
            notes.pop(key, None)
        self._routed[replica][key] = (time.time(), tokens)

    def _routed_tokens(self, loads: dict[ReplicaID, ReplicaLoad]) -> dict[ReplicaID, int]:
        out: dict[ReplicaID, int] = {}
        for rid, load in loads.items():
            kept = {k: (t, n) for k, (t, n) in self._routed.get(rid, {}).items() if t > load.ts}
            self._routed[rid] = kept
            out[rid] = sum(n for _, n in kept.values())
        return out

    def _two_choices(self, replicas: list[RunningReplica]) -> list[RunningReplica]:
        if len(replicas) <= 2:
            return self._rng.sample(replicas, len(replicas))
        return self._rng.sample(replicas, 2)
