"""Multi-Level Priority Sorter: the order in which SlidingServe serves requests.

The sort key is lexicographic, smallest first:

1. SLO-protection status. ``-1`` for a request that has starved (aging, below); otherwise the
   tier priority (0 = most important) after aging, plus ``INFEASIBLE`` (a large offset) when the
   request cannot make its next deadline even if served right now (its own predicted service
   time exceeds its slack; before the first token the target is the earlier of the TTFT deadline
   and the end-to-end deadline less the request's predicted decode time, for tiers with an
   end-to-end deadline, which still need their decode: ``decode_reserve``). Such requests are still
   served, after every request that can be kept on time. Contention among feasible requests
   (the queue ahead) is the BatchConstructor's job.
   Deferrable work (``defer_frac``, 0.1 by default; None: off). A request of a tier with an
   end-to-end deadline whose slack exceeds ``defer_frac`` x its TTFT target is deferrable: it
   shares one level (``DEFERRABLE``) after every urgent request of every tier, and deferrable
   requests are served least remaining prefill first (level 2 is ignored among them). Once its
   slack falls below that fraction it is urgent again, under its tier. Why: when not every
   request can be on time, serving the shortest first minimises the number of late requests
   (the intuition of Moore-Hodgson for one machine), and end-to-end tiers have slack to wait;
   the long requests that overload pushes past their deadline are then few. Measured on the
   Azure conversation trace (simulator, roofline, 1.3x qoserve's capacity): the backlog grows
   by 13.9% of arrivals instead of 22.4% (``defer_frac`` off) and 22.6% (qoserve). Tiers without
   an end-to-end deadline (interactive) are never deferred.
2. Urgency: predicted slack, next deadline - now - own service time (FCFS by arrival for the
   starving class); with ``urgency_step`` > 0 compared in steps of that fraction of the
   request's TTFT target, so level 3 decides among requests of about equal urgency.
   Among infeasible requests of end-to-end tiers (``shortest_when_infeasible``) level 2 is
   ignored too: their planning target keeps a long decode's time before the end-to-end
   deadline (``decode_reserve``), so most can still finish, and the shortest prefills first
   save the most of them, as on the deferrable level. (Served most overdue first, the oldest
   went first, which had the least time left for their decode: with a 15 s end-to-end target
   at up to twice the load a replica serves, 1,772 late against 1,617; docs/results.md.) An
   infeasible request of a tier without an end-to-end target misses its TTFT either way, and
   nothing later depends on it: those stay ordered by slack.
3. Remaining work: least remaining prefill first.

Aging (``use_aging``): a request with prefill pending that has waited ``w`` seconds since
arrival moves up ``floor(w / aging_s)`` tier levels, and once ``w >= (priority + 1) * aging_s``
it enters the starving class, served FCFS ahead of everything else while it can still make its
deadline, and first among the infeasible requests (FCFS) once it cannot. Bound: a starving
request that can still make its deadline waits at most ``(priority + 1) * aging_s`` plus the
service time of the starving requests that arrived before it; one whose SLO is already lost runs
as soon as the requests still on time leave room, so it waits without bound only under an
overload that never ends, when something has to wait and it is the work that is late anyway.
Why not ahead of everything: with QoServe's tiers a request starves only past its deadline
(``standard`` after 2,400 s against a 600 s end-to-end target), and in a simulated long
overload (docs/results.md) serving such requests first made 31.5% of all requests late and 42%
of the interactive ones in the worst window; 12.9% and none with this rule.
Running decodes are not aged: they run every step they fit. A started prefill (holding KV for
part of its prompt) is aged like a waiting request: exempting every request that holds KV sent a
request back to its tier's level the step its first chunk ran, behind every aged request still
waiting, so under a long overload each aged request got one chunk and was dropped for the next
(docs/results.md, the compressed overload: over a thousand ``batch`` prefills about a third done
held up to 90% of the KV cache, and steps shrank to a few hundred tokens).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

INFEASIBLE = 1000.0  # level-1 offset of requests projected to miss their deadline
DEFERRABLE = 100.0  # level 1 of deferrable requests (``defer_frac``)
STARVING = -1.0


class SorterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Seconds of waiting per tier level gained. 1,200 by default: with QoServe's tiers a `batch`
    # request then reaches `standard`'s level only after 1,200 s, when 600 s of its 1,800 s are
    # left, not with 1,200 s left and ahead of `standard` work near its own deadline
    # (docs/results.md: one hour at 1.3x load, 1.33% late with 600, 0.50% with 1,200, 0.72% off).
    aging_s: float = Field(default=1200.0, gt=0)
    # decode reserve of end-to-end tiers: the predicted decode time (the policy learns one from
    # finished requests: ``policy.decode_time``) up to this, and this while none is known
    slack_margin_s: float = Field(default=30.0, ge=0)
    # ... and of any reserve, at most this share of the tier's end-to-end target: a fixed 30 s
    # reserve taken off a 15 s target made every request of that tier infeasible on arrival; a
    # cap of half the target planned prefills too late for long decodes (docs/results.md)
    slack_margin_frac: float = Field(default=0.9, gt=0, le=1)
    use_aging: bool = True
    use_feasibility: bool = True
    # End-to-end-tier requests with more slack than this fraction of their TTFT target are
    # deferrable: after every urgent request, least remaining prefill first (None: off).
    defer_frac: float | None = Field(default=0.1, gt=0)
    # infeasible end-to-end-tier requests: least remaining prefill first (level 2 ignored)
    shortest_when_infeasible: bool = True
    # Level 2 compares slack in steps of this fraction of each request's TTFT target (0: exact),
    # so that among requests of about equal urgency the least remaining prefill goes first.
    # 0.05 by default: with exact slack (0), equal-deadline requests under a full KV cache on
    # the real engine ordered most-remaining first and evicted each other without end (engine
    # KV-pressure test); the simulator measured 0 (2.9% violations at 25 rps) above 0.05 (7.9%).
    urgency_step: float = Field(default=0.05, ge=0.0, le=1.0)


class MultiLevelPrioritySorter:
    def __init__(self, config: SorterConfig):
        self.config = config

    def protection_level(
        self, priority: np.ndarray, waited_s: np.ndarray, decoding: np.ndarray
    ) -> np.ndarray:
        """Level 1 before the feasibility test: tier priority after aging, STARVING when starved."""
        return self._levels(priority, waited_s, decoding)[0]

    def _levels(
        self, priority: np.ndarray, waited_s: np.ndarray, decoding: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``protection_level`` and the mask of starving requests (None: nobody starves)."""
        if not self.config.use_aging:
            return priority.astype(np.float64), None
        raw = np.floor(waited_s / self.config.aging_s)
        if not raw.any():  # the usual case (nobody waited aging_s yet): no level moves
            return priority, None  # (tier priorities are >= 0: the formula below gives them)
        aged = np.where(decoding, 0.0, raw)
        level = np.maximum(priority - aged, 0.0)
        level = np.where(aged >= priority + 1.0, STARVING, level)
        starving = level == STARVING
        return level, starving if starving.any() else None

    def plan(
        self,
        now: float,
        due: np.ndarray,
        service_s: np.ndarray,
        priority: np.ndarray,
        arrival: np.ndarray,
        remaining: np.ndarray,
        decoding: np.ndarray,
        reserve_s: np.ndarray,
        ttft_s: np.ndarray | None = None,
        has_e2e: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices in serving order, and the mask of requests that cannot make their deadline.

        ``due``: next deadline; ``service_s``: predicted time to the next token if served now;
        ``decoding``: running decodes (never aged); ``reserve_s``: time to keep before the deadline
        (``decode_reserve`` gives it: the decode time of an e2e tier's request still in prefill);
        ``ttft_s``/``has_e2e``: each request's TTFT target and whether its tier has an end-to-end
        deadline (without both, no request is deferrable and level 2 is exact slack).
        """
        # (starving: None in the usual case that nobody starves, which spares the masks below)
        level, starving = self._levels(priority, now - arrival, decoding)
        slack = due - reserve_s - now - service_s
        deferrable = None
        if self.config.defer_frac is not None and ttft_s is not None and has_e2e is not None:
            deferrable = has_e2e & (slack > self.config.defer_frac * ttft_s)
            if starving is not None:
                deferrable &= ~starving
            level = np.where(deferrable, DEFERRABLE, level)
        if self.config.use_feasibility:
            # starving requests too: one that can no longer make its deadline goes first among
            # the infeasible ones (STARVING + INFEASIBLE), not ahead of work still on time
            infeasible = slack < 0.0
            level = level + np.where(infeasible, INFEASIBLE, 0.0)
        else:
            infeasible = np.zeros(len(due), dtype=bool)
        if self.config.urgency_step > 0 and ttft_s is not None:
            slack = np.floor(slack / (self.config.urgency_step * ttft_s))
        urgency = slack if starving is None else np.where(starving, arrival, slack)
        if deferrable is not None:
            urgency = np.where(deferrable, 0.0, urgency)  # level 3 decides among them
        if self.config.shortest_when_infeasible and has_e2e is not None:
            shortest = infeasible & has_e2e  # (nothing when use_feasibility is off)
            if starving is not None:
                shortest &= ~starving  # the starving class stays FCFS
            urgency = np.where(shortest, 0.0, urgency)  # level 3 decides among them
        return np.lexsort((remaining, urgency, level)), infeasible

    def decode_reserve(
        self, due: np.ndarray, e2e_due: np.ndarray, e2e_first: np.ndarray,
        e2e_s: np.ndarray | None = None, decode_s: np.ndarray | None = None,
    ) -> np.ndarray:
        """Time to keep before ``due`` so that a request still in prefill leaves its decode
        ``m`` before its end-to-end deadline: ``m`` is the request's predicted decode time
        (``decode_s``, from ``policy.decode_time``, NaN where unknown), at most
        ``slack_margin_s`` (the reserve where no prediction is given) and at most
        ``slack_margin_frac x e2e_s`` (``e2e_s``: each request's end-to-end target). The
        planning target is ``min(TTFT deadline, end-to-end deadline - m)``, so the reserve moves
        only the end-to-end bound. (A fixed reserve taken off the TTFT deadline would make every
        request of a tier whose TTFT target is under ``slack_margin_s`` infeasible on arrival,
        and the feasibility level would send that whole tier behind lower ones; the share does
        the same for an end-to-end target under the reserve.)
        ``e2e_first``: 1.0 for end-to-end-tier requests before their first token, else 0.0."""
        m: float | np.ndarray = self.config.slack_margin_s
        if decode_s is not None:
            m = np.where(np.isnan(decode_s), m, np.minimum(decode_s, m))
        if e2e_s is not None:  # (inf x share for tiers without a target: the margin itself)
            m = np.minimum(m, self.config.slack_margin_frac * e2e_s)
        over = np.clip(due - (e2e_due - m), 0.0, m)  # -inf (no e2e target) clips to 0
        return np.where(e2e_first > 0.0, over, 0.0)
