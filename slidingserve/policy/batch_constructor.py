"""BatchConstructor: which at-risk requests to keep on time when not all of them can be.

When serving the prefill queue in sorted order is predicted to make some requests miss their
deadlines, the constructor solves a 0/1 knapsack with deadlines (1 || sum w_j U_j, the
Lawler-Moore dynamic program) over the requests due within ``horizon_s``:

* item j: cost p_j = its predicted service time (remaining prefill x the step's time per
  prefill token: its share of the coming steps), deadline d_j = its slack target - now,
  value w_j = its tier weight; given the tiers' priorities, the values are lexicographic
  (one request of a higher tier outweighs every request of the lower ones in the window, its
  weight deciding only within a priority), so a higher tier is never given up to keep
  lower-tier requests on time;
* a chosen set is feasible when, served in earliest-deadline order, each finishes by its own
  deadline (sum of the chosen p_i with d_i <= d_j is <= d_j); the capacity of item j is its
  own available slack;
* the DP maximises the total weight kept on time: items in deadline order, F[t] = best weight
  with total cost exactly t, F[t] = max(F[t], F[t - p_j] + w_j) for p_j <= t <= d_j.

The kept requests go first: in earliest-deadline order, or, given priorities, tier by tier
(the highest first) and in deadline order within a tier. Why tiers first: in earliest-deadline
order a kept lower-tier request with the earlier deadline runs ahead of a kept higher-tier one
that is predicted to make it with little to spare, and a prediction that is a step short then
makes the higher tier late. Measured in the simulator (roofline, 600 requests of 500-4,000
prompt tokens at 18 req/s, interactive 2 s TTFT and a `standard` tier with a 15 s end-to-end
target, seed 3; docs/results.md): 44 interactive requests late with deadline order, 0 tier by
tier. The priorities passed are the sorter's levels after aging, so an aged request keeps the
place aging gave it (with raw tier priorities a compressed long overload made 3.8% of its
requests late instead of 2.0%).

Discretisation: time in units of q = max(resolution_s, horizon_s / max_units); costs are
rounded up and deadlines down, so a set the DP accepts is also feasible in continuous time, and
the DP is exact for the discretised instance (tests check it against brute force). Cost
O(items x units) with numpy rows, run only on steps where something is at risk.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ConstructorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    horizon_s: float = Field(default=20.0, gt=0)  # only requests due within this are items
    resolution_s: float = Field(default=0.01, gt=0)  # time unit of the DP (at least)
    max_units: int = Field(default=1024, ge=8)  # DP columns at most
    max_items: int = Field(default=48, ge=1)  # DP rows at most (the most urgent)


def knapsack_with_deadlines(
    cost: np.ndarray, due: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, float]:
    """Exact Lawler-Moore DP on integer costs (>= 1) and deadlines: chosen mask and its value."""
    n = len(cost)
    chosen = np.zeros(n, dtype=bool)
    if n == 0:
        return chosen, 0.0
    order = np.argsort(due, kind="stable")
    horizon = int(max(due.max(), 0))
    best = np.full(horizon + 1, -np.inf)
    best[0] = 0.0
    take = np.zeros((n, horizon + 1), dtype=bool)
    costs, dues, values = cost.tolist(), due.tolist(), value.tolist()
    rows = order.tolist()
    for row, j in enumerate(rows):
        p, d = int(costs[j]), int(dues[j])
        if p > d:
            continue
        cand = best[: d - p + 1] + values[j]
        seg = best[p : d + 1]
        np.greater(cand, seg, out=take[row, p : d + 1])
        np.maximum(cand, seg, out=seg)  # (where equal, the same value either way)
    t = int(np.argmax(best))
    total = float(best[t])
    for row in range(n - 1, -1, -1):
        if take[row, t]:
            j = rows[row]
            chosen[j] = True
            t -= int(costs[j])
    return chosen, total


class BatchConstructor:
    def __init__(self, config: ConstructorConfig):
        self.config = config

    def plan(self, service_s: np.ndarray, target_s: np.ndarray, weight: np.ndarray,
             priority: np.ndarray | None = None) -> np.ndarray:
        """A new serving order (a permutation of ``range(n)``) for a queue in sorted order.

        ``service_s``: predicted service time of each queued request; ``target_s``: its
        deadline relative to now (slack target); ``priority``: its tier priority (0 = most
        important; None: weights alone). Unchanged when nothing is at risk; otherwise the
        requests the DP keeps come first (tier by tier given priorities, in deadline order
        within), then the rest of the queue in its order, then the window's requests the DP gave
        up on.
        """
        new = self.reorder(service_s, target_s, weight, priority)
        return np.arange(len(service_s)) if new is None else new

    def any_at_risk(self, service_s: list[float], target_s: list[float]) -> bool:
        """False when ``reorder`` leaves the order as it is: no request among the first
        ``max_items`` due within ``horizon_s`` is predicted late when the queue is served in
        order. Plain Python with early exits (for queues of tens, cheaper than numpy); the same
        float sums as ``reorder``'s ``cumsum``."""
        c = self.config
        done, left = 0.0, c.max_items
        for s, d in zip(service_s, target_s, strict=True):
            done += s
            if d <= c.horizon_s:
                if done > d:
                    return True
                left -= 1
                if not left:
                    return False
        return False

    def reorder(
        self, service_s: np.ndarray, target_s: np.ndarray, weight: np.ndarray,
        priority: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """``plan``, but None when the order is unchanged (nothing at risk)."""
        c = self.config
        window = np.flatnonzero(target_s <= c.horizon_s)[: c.max_items]
        if not window.size or not (np.cumsum(service_s[: window[-1] + 1])[window]
                                   > target_s[window]).any():
            return None
        n = len(service_s)
        order = np.arange(n)
        q = max(c.resolution_s, c.horizon_s / c.max_units)
        cost = np.maximum(np.ceil(service_s[window] / q), 1.0)
        due = np.floor(np.maximum(target_s[window], 0.0) / q)
        value = weight[window]
        if priority is not None:
            value = _lexicographic(value, priority[window])
        keep, _ = knapsack_with_deadlines(cost, due, value)
        kept = window[keep]
        if priority is None:
            kept = kept[np.argsort(target_s[kept], kind="stable")]
        else:
            kept = kept[np.lexsort((target_s[kept], priority[kept]))]
        dropped = window[~keep]
        rest = np.ones(n, dtype=bool)
        rest[window] = False
        return np.concatenate([kept, order[rest], dropped])


def _lexicographic(weight: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Values under which one request of a higher tier (lower ``priority``) is worth more than
    all requests of the lower tiers together; ``weight`` decides within a priority. Ranks of the
    priorities present, not the priorities, are the exponents (a window holds few tiers)."""
    w = weight.astype(np.float64) / float(weight.min())  # >= 1
    levels, rank = np.unique(priority, return_inverse=True)  # rank 0 = the highest tier here
    base = float(w.sum()) + 1.0  # more than the whole window's weight
    return w * base ** (len(levels) - 1 - rank)
