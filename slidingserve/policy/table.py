"""Column view of a step's requests, built once per step for the vectorised planners.

A ``RequestTable`` holds one row per request (running first, in the host's order, then
waiting) in a float matrix whose columns the planners read as numpy arrays. ``TableBuilder``
builds it: running requests are read afresh every step (they change every step), while a
waiting request's row is cached by key from the step it is first seen waiting until it is seen
running or forgotten (a request does not change while it waits; hosts re-queue a preempted
request as a waiting one, which is read afresh). So a step costs O(running + new arrivals) in
Python, plus numpy work on the waiting rows: the simulator's queues can hold thousands.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter

import numpy as np

from slidingserve.policy.types import RequestView
from slidingserve.slo import SLOTier

_NUMERIC = attrgetter(
    "key", "arrival_s", "prompt_len", "num_computed", "num_generated", "num_blocks"
)
_KEY = attrgetter("key")
_FIRST = attrgetter("first_token_s")
_TIER = attrgetter("tier")
(KEY, ARRIVAL, PROMPT, COMPUTED, GENERATED, BLOCKS, FIRST, PRIORITY, WEIGHT, TTFT, TPOT, E2E) = (
    range(12)
)
N_COLUMNS = 12


def _tier_row(t: SLOTier) -> tuple[float, float, float, float, float]:
    e2e = float("inf") if t.e2e_s is None else t.e2e_s
    return (float(t.priority), t.weight, t.ttft_s, t.tpot_s, e2e)


def read_rows(views: list[RequestView]) -> np.ndarray:
    """The (len(views), N_COLUMNS) matrix of ``views``; first-token time NaN before it."""
    n = len(views)
    out = np.empty((n, N_COLUMNS), dtype=np.float64)
    if n == 0:
        return out
    out[:, :FIRST] = np.fromiter(chain.from_iterable(map(_NUMERIC, views)), np.float64,
                                 6 * n).reshape(n, 6)
    nan = float("nan")
    out[:, FIRST] = [nan if f is None else f for f in map(_FIRST, views)]
    tiers = list(map(_TIER, views))
    _, at, tier_of = np.unique(np.fromiter(map(id, tiers), np.int64, n), return_index=True,
                               return_inverse=True)
    rows = np.array([_tier_row(tiers[i]) for i in at], dtype=np.float64).reshape(len(at), 5)
    out[:, PRIORITY:] = rows[tier_of.reshape(-1)]
    return out


class RequestTable:
    """Rows ``[0, n_running)`` are the running requests, the rest the waiting ones."""

    __slots__ = ("data", "n_running", "views")

    def __init__(self, views: list[RequestView], n_running: int, data: np.ndarray):
        self.views, self.n_running, self.data = views, n_running, data

    def __len__(self) -> int:
        return len(self.views)

    key = property(lambda self: self.data[:, KEY].astype(np.int64))
    arrival = property(lambda self: self.data[:, ARRIVAL])
    prompt = property(lambda self: self.data[:, PROMPT])
    computed = property(lambda self: self.data[:, COMPUTED])
    generated = property(lambda self: self.data[:, GENERATED])
    blocks = property(lambda self: self.data[:, BLOCKS])
    first = property(lambda self: self.data[:, FIRST])
    priority = property(lambda self: self.data[:, PRIORITY])
    weight = property(lambda self: self.data[:, WEIGHT])
    ttft = property(lambda self: self.data[:, TTFT])
    tpot = property(lambda self: self.data[:, TPOT])
    e2e = property(lambda self: self.data[:, E2E])  # inf where the tier has none

    @property
    def pending(self) -> np.ndarray:
        """Tokens to run before the next output token (1 for a decode)."""
        return self.prompt + self.generated - self.computed

    @property
    def is_running(self) -> np.ndarray:
        m = np.zeros(len(self.views), dtype=bool)
        m[: self.n_running] = True
        return m

    def e2e_due(self) -> np.ndarray:
        return self.arrival + self.e2e

    def next_due(self) -> np.ndarray:
        """Vectorised ``slidingserve.policy.deadlines.next_due``."""
        e2e_due = self.e2e_due()
        ttft_due = np.minimum(self.arrival + self.ttft, e2e_due)
        paced = np.minimum(self.first + self.generated * self.tpot, e2e_due)
        started = (self.generated > 0) & ~np.isnan(self.first)
        return np.where(started, paced, ttft_due)


class TableBuilder:
    """Builds a step's ``RequestTable``, caching the rows of waiting requests by key."""

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}
        self._store = np.empty((64, N_COLUMNS), dtype=np.float64)
        self._free: list[int] = list(range(63, -1, -1))

    def __len__(self) -> int:
        return len(self._slot)

    def forget(self, key: int) -> None:
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._free.append(slot)

    def build(self, running: list[RequestView], waiting: list[RequestView]) -> RequestTable:
        if self._slot and running:
            for key in self._slot.keys() & set(map(_KEY, running)):
                self.forget(key)
        keys = list(map(_KEY, waiting))
        slots = list(map(self._slot.get, keys))
        if None in slots:
            new = [i for i, s in enumerate(slots) if s is None]
            fresh = read_rows([waiting[i] for i in new])
            for i, row in zip(new, fresh, strict=True):
                s = slots[i] = self._allocate()
                self._store[s] = row
                self._slot[keys[i]] = s
        if len(self._slot) > 2 * len(keys) + 1024:  # drop keys that left without forget()
            for key in self._slot.keys() - set(keys):
                self.forget(key)
        rows = self._store[np.asarray(slots, dtype=np.intp)] if keys else self._store[:0]
        return RequestTable(running + waiting, len(running),
                            np.concatenate([read_rows(running), rows]))

    def _allocate(self) -> int:
        if not self._free:
            old = len(self._store)
            self._store = np.concatenate([self._store, np.empty_like(self._store)])
            self._free = list(range(2 * old - 1, old - 1, -1))
        return self._free.pop()
