"""``decodes-first``: the fixed-chunk baselines of QoServe's capacity experiment.

QoServe (Niyama) compares itself with Sarathi-FCFS and Sarathi-EDF, both run by its own
``DeadlineScheduler`` (``niyama_asplos2026`` branch of microsoft/sarathi-serve) with a fixed
``chunk_size`` (256 tokens in the published runs). This is that scheduler's fixed-chunk mode:

* Decodes first: running decodes sorted by the public code's key ``(0, -slack)`` (the decode
  with the *most* slack first; slack from ``deadlines.next_due``, so banked tiers get the
  public code's banked deadlines), one token each, until the step holds ``budget`` tokens.
* Then one prefill queue (running partial prefills and waiting requests) in ``order``:
  ``fcfs`` by arrival, ``edf`` by the TTFT deadline (``arrival + ttft target``); each takes
  ``min(remaining prefill, budget left)``.
* The public code never preempts (it asserts that KV suffices). Here a decode or a running
  prefill short of KV preempts the running requests that arrived last, so that a run under KV
  pressure cannot stall; a waiting request that does not fit stops admission.

``sarathi`` and ``edf`` are our own fixed-budget baselines (their budget is swept by the
capacity harness); these are the published configurations, kept as they were run.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator
from typing import Literal

from slidingserve.latency import LatencyModel
from slidingserve.policy.base import register_policy
from slidingserve.policy.deadlines import next_due
from slidingserve.policy.fixed_budget import FixedBudgetConfig, FixedBudgetPolicy
from slidingserve.policy.packing import BudgetPacker, make_room
from slidingserve.policy.types import RequestView, SchedulerInput


def _arrival_key(r: RequestView) -> tuple[float, int]:
    return (r.arrival_s, r.key)


def _ttft_key(r: RequestView) -> tuple[float, int]:
    return (r.ttft_deadline(), r.key)


class DecodesFirstConfig(FixedBudgetConfig):
    budget: int = 256  # tokens per step (the public code's ``chunk_size``)
    order: Literal["fcfs", "edf"] = "fcfs"  # prefill queue order


class SortedWaiting:
    """The waiting queue in a fixed order, kept sorted across steps.

    A request does not change while it waits, so its sort key is computed once, when it is
    first seen waiting; requests that left (admitted, finished) are dropped lazily. A step
    costs O(waiting) in C-level set and dict work plus O(new arrivals x log) in Python,
    instead of a Python-keyed sort of the whole queue: the simulator's overloaded queues hold
    thousands of requests.
    """

    def __init__(self, key: Callable[[RequestView], tuple[float, int]]):
        self._key = key
        self._items: list[tuple[tuple[float, int], int]] = []  # (sort key, request key)
        self._members: set[int] = set()
        self._dead = 0

    def ordered(self, waiting: list[RequestView]) -> Iterator[RequestView]:
        live = {v.key: v for v in waiting}
        new = live.keys() - self._members
        for k in new:
            bisect.insort(self._items, (self._key(live[k]), k))
        self._members |= new
        gone = self._members - live.keys()
        if gone:
            self._members -= gone
            self._dead += len(gone)
        if self._dead and 2 * self._dead > len(self._items):
            self._items = [item for item in self._items if item[1] in live]
            self._dead = 0
        for _, k in self._items:
            v = live.get(k)
            if v is not None:
                yield v


@register_policy("decodes-first")
class DecodesFirst(FixedBudgetPolicy):
    config_cls = DecodesFirstConfig
    config: DecodesFirstConfig

    def __init__(self, config: DecodesFirstConfig, latency: LatencyModel):
        super().__init__(config, latency)
        self._waiting = SortedWaiting(_arrival_key if config.order == "fcfs" else _ttft_key)

    def fill(self, state: SchedulerInput, packer: BudgetPacker) -> None:
        now = state.now_s
        victims = sorted(state.running, key=lambda r: (r.arrival_s, r.key))  # last: victim
        decodes = [r for r in state.running if not r.in_prefill]
        decodes.sort(key=lambda r: (now - next_due(r), r.key))  # -slack ascending
        for r in decodes:
            if packer.tokens_left <= 0:
                break
            if r.remaining_prefill > 0 and make_room(packer, r, 1, victims):
                packer.add_fitting(r, 1)
        key = _arrival_key if self.config.order == "fcfs" else _ttft_key
        partial = sorted((r for r in state.running if r.in_prefill), key=key)
        queue = heapq.merge(partial, self._waiting.ordered(state.waiting), key=key)
        running = {r.key for r in state.running}
        for r in queue:
            if packer.tokens_left <= 0 or packer.seqs_left <= 0:
                break
            n = packer.token_cap(r)
            if n <= 0:
                continue
            if r.key in running:
                make_room(packer, r, n, victims)
            elif packer.fit(r, n) < n:
                break  # a waiting request whose chunk does not fit stops admission
            packer.add_fitting(r, n)
