"""SlidingServe's preemption victims: running requests in serving order, preempted from its end.

A request only ever evicts requests it ranks above, so two requests cannot evict each other
step after step.
"""

from __future__ import annotations

import numpy as np

from slidingserve.policy.packing import BudgetPacker, make_room
from slidingserve.policy.table import RequestTable
from slidingserve.policy.types import RequestView


class Victims:
    """Running requests in serving order (``order[running]``), materialised only when KV runs
    short."""

    def __init__(self, table: RequestTable, order: np.ndarray, running: np.ndarray):
        self._table, self._order, self._running = table, order, running
        self._list: list[RequestView] | None = None
        self._rank: dict[int, int] = {}

    def make_room(self, packer: BudgetPacker, req: RequestView, num_tokens: int) -> bool:
        """Preempt, from the end of the order, only requests ranked after ``req``: a request
        never evicts one it ranks below, so two requests cannot evict each other step after
        step (a livelock seen on the real engine when the cache held less than the demand)."""
        if not packer.kv_short(req, num_tokens):
            return True
        if self._list is None:
            views = self._table.views
            self._list = [views[i] for i in self._order[self._running].tolist()]
            self._rank = {v.key: i for i, v in enumerate(self._list)}
        after = self._list[self._rank.get(req.key, -1) + 1 :]
        before = len(after)
        ok = make_room(packer, req, num_tokens, after)
        del self._list[len(self._list) - (before - len(after)) :]  # make_room pops from the end
        return ok
