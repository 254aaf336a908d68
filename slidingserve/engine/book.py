"""Our integer keys for vLLM's requests and the policy's view of each.

vLLM rewrites request ids (the frontend appends a suffix), so the adapter never hands them to
a policy: each request gets the next integer key of this book when it arrives. The book keeps
one ``RequestView`` per request and refreshes its mutable fields from vLLM's ``Request`` before
every step (cheap attribute copies, no allocation). A request does not change while it waits, so
a waiting request's view, once refreshed as waiting, is reused as is until the request is seen
running again (a preempted request comes back to the queue from running, so it is read afresh);
with prefix caching on, every waiting view is refreshed (its cached prefix can grow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slidingserve.engine.prefix import PrefixProbe
from slidingserve.engine.slo import SLOError, tier_of
from slidingserve.policy.types import RequestView
from slidingserve.slo.tiers import TierSet


@dataclass(slots=True)
class Tracked:
    request: Any  # vllm.v1.request.Request
    view: RequestView
    settled: bool = False  # the view is current: refreshed as waiting, not run since


class RequestBook:
    """Requests the adapter schedules, by vLLM id and by our key; plus refused ones."""

    def __init__(self, tiers: TierSet):
        self.tiers = tiers
        self.by_id: dict[str, Tracked] = {}
        self.by_key: dict[int, Tracked] = {}
        self.refused: dict[str, str] = {}  # vLLM id -> why (finished with an error next step)
        self._next_key = 0

    def admit(self, request: Any) -> None:
        """Track ``request``; a request with bad SLO metadata lands in ``refused`` instead."""
        try:
            tier = tier_of(request.sampling_params.extra_args if request.sampling_params else None,
                           self.tiers)
        except SLOError as exc:
            self.refused[request.request_id] = f"slidingserve refused request: {exc}"
            return
        key = self._next_key
        self._next_key += 1
        view = RequestView(
            key=key,
            tier=tier,
            arrival_s=request.arrival_time,
            prompt_len=request.num_prompt_tokens,
            num_computed=request.num_computed_tokens,
            num_generated=0,
            max_tokens=request.max_tokens,
        )
        tracked = Tracked(request, view)
        self.by_id[request.request_id] = tracked
        self.by_key[key] = tracked

    def drop(self, request_id: str) -> int | None:
        """Forget a finished request; returns its key (None if it was never tracked)."""
        self.refused.pop(request_id, None)
        tracked = self.by_id.pop(request_id, None)
        if tracked is None:
            return None
        del self.by_key[tracked.view.key]
        return tracked.view.key

    def views(self, requests: Any, block_size: int, holds_kv: bool, output_s: float,
              prefix: PrefixProbe | None = None) -> list[RequestView]:
        """Refreshed views of ``requests`` (vLLM ``Request`` objects) that the book tracks.

        With ``prefix`` (prefix caching on), a waiting request's ``num_computed`` is the
        cached prefix admission would start it from, and a running request's
        ``num_shared_blocks`` the blocks other requests hold too (``engine.prefix``)."""
        out = []
        by_id = self.by_id
        for req in requests:
            tracked = by_id.get(req.request_id)
            if tracked is None:
                continue
            v = tracked.view
            if tracked.settled and not holds_kv and prefix is None:
                out.append(v)
                continue
            tracked.settled = not holds_kv
            v.num_computed = req.num_computed_tokens
            v.num_generated = req.num_output_tokens
            v.num_preemptions = req.num_preemptions
            if holds_kv:
                v.num_blocks = -(-req.num_computed_tokens // block_size)
                v.num_shared_blocks = prefix.shared_blocks(req) if prefix is not None else 0
            else:
                v.num_blocks = v.num_shared_blocks = 0
                if prefix is not None:
                    v.num_computed = max(v.num_computed, prefix.cached_tokens(req))
            if v.first_token_s is None and v.num_generated > 0:
                v.first_token_s = output_s
            out.append(v)
        return out
