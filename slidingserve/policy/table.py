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

import math
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
_FIRST_TOKEN = attrgetter("first_token_s")
_TIER_COLUMNS = attrgetter("priority", "weight", "ttft_s", "tpot_s", "e2e_s")
_NAN = float("nan")
_INF = float("inf")
(
    KEY, ARRIVAL, PROMPT, COMPUTED, GENERATED, BLOCKS, FIRST,
    PRIORITY, WEIGHT, TTFT, TPOT, E2E,
    PENDING, DUE, REMAINING, E2E_FIRST,
) = range(16)  # fmt: skip
N_COLUMNS = 16


def _row(v: RequestView) -> tuple[float, ...]:
    """One table row: the view's fields, its tier's, its pending tokens and next deadline.

    The deadline is ``deadlines.next_due(v)`` written out on the row's values (calling it
    costs more than the rest of the row; tests/policy/test_table.py checks that they agree).
    Integer fields become floats in the matrix (``read_rows``' ``fromiter``).
    """
    priority, weight, ttft, tpot, e2e, banked = _tier_row(v.tier)
    arrival, generated, first = v.arrival_s, v.num_generated, v.first_token_s
    e2e_due = arrival + e2e
    if not generated or first is None:
        due = arrival + ttft
    elif banked:
        anchor = arrival + ttft
        due = (first if first > anchor else anchor) + (generated + 1) * tpot
    else:
        due = first + generated * tpot
    pending = v.prompt_len + generated - v.num_computed
    return (
        *_NUMERIC(v),
        _NAN if first is None else first,
        priority, weight, ttft, tpot, e2e,
        pending,
        due if due < e2e_due else e2e_due,
        pending if pending > 1 else 0,
        1.0 if not generated and math.isfinite(e2e) else 0.0,
    )  # fmt: skip


def read_rows(views: list[RequestView]) -> np.ndarray:
    """The (len(views), N_COLUMNS) matrix of ``views``; first-token time NaN before it.

    Few rows: one pass of plain Python builds each row as a tuple and one ``fromiter`` fills
    the matrix, a handful of numpy calls whatever the number of rows, which is what small steps
    pay for. From ``BULK_ROWS`` rows on, ``read_columns`` computes the same matrix column by
    column (tests/policy/test_table.py checks that the two agree to the bit).
    """
    n = len(views)
    if n >= BULK_ROWS:
        return read_columns(views)
    rows = [_row(v) for v in views]
    flat = np.fromiter(chain.from_iterable(rows), np.float64, N_COLUMNS * n)
    return flat.reshape(n, N_COLUMNS)


BULK_ROWS = 48  # about where read_columns' fixed numpy cost falls below _row's per-row cost


def read_columns(views: list[RequestView]) -> np.ndarray:
    """``read_rows`` in bulk: the views' fields read by C-level ``map``s, the tier columns
    from one row per distinct tier object (hosts may give every request its own), the derived
    columns (pending, next deadline, ...) as numpy expressions of the same arithmetic as
    ``_row``."""
    n = len(views)
    data = np.empty((n, N_COLUMNS), dtype=np.float64)
    data[:, :FIRST] = np.fromiter(
        chain.from_iterable(map(_NUMERIC, views)), np.float64, FIRST * n
    ).reshape(n, FIRST)
    data[:, FIRST] = [_NAN if f is None else f for f in map(_FIRST_TOKEN, views)]
    tiers = list(map(_TIER, views))
    ids = list(map(id, tiers))
    by_id = dict(zip(ids, tiers, strict=True))
    code = {i: c for c, i in enumerate(by_id)}
    per_tier = np.array([_tier_row(t) for t in by_id.values()], dtype=np.float64)
    tier_cols = per_tier[np.fromiter(map(code.__getitem__, ids), np.intp, n)]
    data[:, PRIORITY : E2E + 1] = tier_cols[:, :5]
    banked = tier_cols[:, 5] > 0.0
    arrival, generated, first = data[:, ARRIVAL], data[:, GENERATED], data[:, FIRST]
    ttft, tpot, e2e = data[:, TTFT], data[:, TPOT], data[:, E2E]
    pending = data[:, PROMPT] + generated - data[:, COMPUTED]
    anchor = arrival + ttft
    started = (generated > 0) & ~np.isnan(first)
    due = np.where(
        started,
        np.where(banked, np.maximum(first, anchor) + (generated + 1) * tpot,
                 first + generated * tpot),
        anchor,
    )
    data[:, PENDING] = pending
    data[:, DUE] = np.minimum(due, arrival + e2e)
    data[:, REMAINING] = np.where(pending > 1, pending, 0.0)
    data[:, E2E_FIRST] = (generated == 0) & np.isfinite(e2e)
    return data


def _tier_row(tier: SLOTier) -> tuple[float, ...]:
    """A tier's columns (priority .. e2e, inf for none) and 1.0 where decodes are banked."""
    priority, weight, ttft, tpot, e2e = _TIER_COLUMNS(tier)
    return (priority, weight, ttft, tpot, _INF if e2e is None else e2e,
            1.0 if tier.decode_deadlines == "banked" else 0.0)


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
    # The pending tokens of requests in prefill (more than one pending), else 0.
    remaining = property(lambda self: self.data[:, REMAINING])
    # 1.0 for requests of a tier with an end-to-end target before their first token, else 0.0.
    e2e_first = property(lambda self: self.data[:, E2E_FIRST])

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
        n = len(waiting)
        slots = list(map(self._slot.get, map(_KEY, waiting)))
        try:  # the usual step: every waiting row cached (None, a row not cached, raises)
            index = np.fromiter(slots, np.intp, n)
            new: list[int] = []
        except TypeError:
            new = [i for i, s in enumerate(slots) if s is None]
        # One read for the running rows and the waiting ones not cached yet.
        fresh = read_rows(running + [waiting[i] for i in new] if new else running)
        if new:
            fresh_slots = [self._allocate() for _ in new]
            for i, s in zip(new, fresh_slots, strict=True):
                slots[i] = self._slot[waiting[i].key] = s
            self._store[fresh_slots] = fresh[len(running) :]
            index = np.fromiter(slots, np.intp, n)
        if len(self._slot) > 2 * n + 1024:  # drop keys that left without forget()
            for key in self._slot.keys() - set(map(_KEY, waiting)):
                self.forget(key)
        if len(new) == n:  # every waiting row is fresh, already in waiting order
            data = fresh
        else:
            data = np.concatenate([fresh[: len(running)], self._store[index]])
        return RequestTable(running + waiting, len(running), data)

    def _allocate(self) -> int:
        if not self._free:
            old = len(self._store)
            self._store = np.concatenate([self._store, np.empty_like(self._store)])
            self._free = list(range(2 * old - 1, old - 1, -1))
        return self._free.pop()
