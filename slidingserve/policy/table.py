"""Column view of a step's requests, built once per step for the vectorised planners.

``RequestTable.build(running, waiting)`` reads every ``RequestView`` once (one tuple per
request) and exposes numpy columns; rows ``[0, n_running)`` are the running requests in the
host's order, the rest the waiting ones. Tier constants come from a small per-tier cache keyed
by object identity, so a table costs a few microseconds per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import numpy as np

from slidingserve.policy.types import RequestView
from slidingserve.slo import SLOTier

_INF = float("inf")
_NUMERIC = attrgetter(
    "key", "arrival_s", "prompt_len", "num_computed", "num_generated", "num_blocks"
)
_FIRST = attrgetter("first_token_s")
_TIER = attrgetter("tier")


def _tier_row(t: SLOTier) -> tuple[float, float, float, float, float]:
    e2e = _INF if t.e2e_s is None else t.e2e_s
    return (float(t.priority), t.weight, t.ttft_s, t.tpot_s, e2e)


@dataclass(slots=True)
class RequestTable:
    views: list[RequestView]
    n_running: int
    key: np.ndarray  # int64
    arrival: np.ndarray
    prompt: np.ndarray
    computed: np.ndarray
    generated: np.ndarray
    blocks: np.ndarray
    first: np.ndarray  # first-token time, NaN before it
    priority: np.ndarray  # tier priority (0 = most important)
    weight: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    e2e: np.ndarray  # inf where the tier has none

    @classmethod
    def build(cls, running: list[RequestView], waiting: list[RequestView]) -> RequestTable:
        views = running + waiting
        n = len(views)
        a = np.fromiter(chain.from_iterable(map(_NUMERIC, views)), np.float64, 6 * n).reshape(n, 6)
        nan = float("nan")
        first = np.array([nan if f is None else f for f in map(_FIRST, views)], dtype=np.float64)
        tier_objs = list(map(_TIER, views))
        ids = np.fromiter(map(id, tier_objs), np.int64, n)
        _, at, tier_of = np.unique(ids, return_index=True, return_inverse=True)
        rows = [_tier_row(tier_objs[i]) for i in at]
        tv = np.array(rows, dtype=np.float64).reshape(len(rows), 5)[tier_of.reshape(-1)]
        return cls(
            views,
            len(running),
            a[:, 0].astype(np.int64),
            a[:, 1],
            a[:, 2],
            a[:, 3],
            a[:, 4],
            a[:, 5],
            first,
            tv[:, 0],
            tv[:, 1],
            tv[:, 2],
            tv[:, 3],
            tv[:, 4],
        )

    def __len__(self) -> int:
        return len(self.views)

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
        ttft_due = np.minimum(self.arrival + self.ttft, self.e2e_due())
        paced = np.minimum(self.first + self.generated * self.tpot, self.e2e_due())
        started = (self.generated > 0) & ~np.isnan(self.first)
        return np.where(started, paced, ttft_due)
