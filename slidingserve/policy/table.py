"""Column view of a step's requests, built once per step for the vectorised planners.

A ``RequestTable`` holds one row per request (running first, in the host's order, then
waiting) in a float matrix whose columns the planners read as numpy arrays; besides the view's
fields and its tier's targets, a row holds two derived values, the tokens pending and the next
deadline (``deadlines.next_due``), computed while the row is read. ``TableBuilder``
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
_TIER = attrgetter("tier")
_NAN = float("nan")
(
    KEY, ARRIVAL, PROMPT, COMPUTED, GENERATED, BLOCKS, FIRST,
    PRIORITY, WEIGHT, TTFT, TPOT, E2E,
    PENDING, DUE,
) = range(14)  # fmt: skip
N_COLUMNS = 14


def _tier_row(t: SLOTier) -> tuple[float, float, float, float, float]:
    e2e = float("inf") if t.e2e_s is None else t.e2e_s
    return (float(t.priority), t.weight, t.ttft_s, t.tpot_s, e2e)


def _row(v: RequestView, tier: tuple[float, float, float, float, float]) -> tuple[float, ...]:
    """One table row: the view's fields, its tier's, its pending tokens and next deadline.

    The deadline is ``deadlines.next_due(v)`` written out on the row's values (calling it
    costs more than the rest of the row; tests/policy/test_table.py checks that they agree).
    """
    _, _, ttft, tpot, e2e = tier
    arrival, generated, first = v.arrival_s, v.num_generated, v.first_token_s
    e2e_due = arrival + e2e  # inf without an end-to-end target
    due = first + generated * tpot if generated and first is not None else arrival + ttft
    return (
        *_NUMERIC(v),
        _NAN if first is None else first,
        *tier,
        v.prompt_len + generated - v.num_computed,
        due if due < e2e_due else e2e_due,
    )


_TierRows = dict[int, tuple[SLOTier, tuple[float, float, float, float, float]]]


def read_rows(views: list[RequestView], tier_rows: _TierRows | None = None) -> np.ndarray:
    """The (len(views), N_COLUMNS) matrix of ``views``; first-token time NaN before it.

    One pass of plain Python builds each row as a tuple (tier columns looked up once per tier
    object, in ``tier_rows``: ``id(tier) -> (tier, its columns)``, which may be kept between
    calls: it holds the tier, so the id cannot be reused while the entry lives; tiers are
    frozen) and one ``fromiter`` fills the matrix: a handful of numpy calls whatever the number
    of rows, which is what small steps pay for.
    """
    n = len(views)
    if tier_rows is None:
        tier_rows = {}
    for tier in map(_TIER, views):
        if id(tier) not in tier_rows:
            tier_rows[id(tier)] = (tier, _tier_row(tier))
    rows = [_row(v, tier_rows[id(v.tier)][1]) for v in views]
    flat = np.fromiter(chain.from_iterable(rows), np.float64, N_COLUMNS * n)
    return flat.reshape(n, N_COLUMNS)


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

    # Tokens to run before the next output token (1 for a decode).
    pending = property(lambda self: self.data[:, PENDING])

    @property
    def is_running(self) -> np.ndarray:
        m = np.zeros(len(self.views), dtype=bool)
        m[: self.n_running] = True
        return m

    def next_due(self) -> np.ndarray:
        """``slidingserve.policy.deadlines.next_due`` of every row."""
        return self.data[:, DUE]


class TableBuilder:
    """Builds a step's ``RequestTable``, caching the rows of waiting requests by key."""

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}
        self._store = np.empty((64, N_COLUMNS), dtype=np.float64)
        self._free: list[int] = list(range(63, -1, -1))
        # Tier columns by tier object, kept between steps (hosts may give every request its own
        # tier object, and a running request's row is read every step); emptied when large.
        self._tier_rows: _TierRows = {}

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
        new = [i for i, s in enumerate(slots) if s is None] if None in slots else []
        # One read for the running rows and the waiting ones not cached yet.
        if len(self._tier_rows) > 4096:
            self._tier_rows.clear()
        fresh = read_rows(running + [waiting[i] for i in new] if new else running, self._tier_rows)
        if new:
            fresh_slots = [self._allocate() for _ in new]
            for i, s in zip(new, fresh_slots, strict=True):
                slots[i] = self._slot[keys[i]] = s
            self._store[fresh_slots] = fresh[len(running) :]
        if len(self._slot) > 2 * len(keys) + 1024:  # drop keys that left without forget()
            for key in self._slot.keys() - set(keys):
                self.forget(key)
        if len(new) == len(keys):  # every waiting row is fresh, already in waiting order
            data = fresh
        else:
            data = np.concatenate([fresh[: len(running)], self._store[np.asarray(slots)]])
        return RequestTable(running + waiting, len(running), data)

    def _allocate(self) -> int:
        if not self._free:
            old = len(self._store)
            self._store = np.concatenate([self._store, np.empty_like(self._store)])
            self._free = list(range(2 * old - 1, old - 1, -1))
        return self._free.pop()
