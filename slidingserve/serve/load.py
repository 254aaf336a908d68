"""A replica's load as it reports it, and the TTFT a new request would see there.

Each engine replica reports a ``ReplicaLoad`` as its Ray Serve routing stats. A request of
priority ``p`` waits for the prefill tokens of requests at priorities ``<= p`` (the engine's
scheduler serves higher-priority tiers first), so its predicted TTFT at a replica is

    step_s + (tokens waiting at priorities <= p + its own prompt) * s_per_prefill_token

or, when the engine starts requests slower than their prefill work explains (its running set
or KV cache is full, so a waiting request starts only when another finishes), the wait for a
start: (requests waiting at priorities <= p) * s_per_start, the measured time between starts
while requests wait (Little's law), plus the request's own prefill,

and its slack is its TTFT target minus that. Both the router (to pick a replica) and the
replica (to admit or refuse) use this one formula, times the replica's ``ttft_scale`` for the
tier: the ratio of the TTFTs it measured to those it predicted at admission (``TTFTCorrection``),
which carries what the formula leaves out (a host slower than the latency model, decode steps
between prefill chunks, higher tiers arriving later and going first).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

LOAD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One replica's routing stats (plain data, so they travel as a dict)."""

    ts: float  # wall time the snapshot was taken (time.time())
    replica: str  # replica id, for logs and tests
    queue_len: int  # requests admitted and not finished
    running: int  # requests past their first token
    waiting_tokens: dict[int, int] = field(default_factory=dict)  # priority -> prefill tokens
    s_per_prefill_token: float = 1e-4  # predicted prefill cost per token
    step_s: float = 0.02  # predicted duration of one decode step at the current batch
    model_version: int | None = None  # predictor model version in use
    hold_limits: dict[int, int] = field(default_factory=dict)  # priority -> most held to admit
    kv_blocks_used: int | None = None  # engine KV blocks held by requests at its last step
    kv_blocks_total: int | None = None
    ttft_scale: dict[int, float] = field(default_factory=dict)  # priority -> measured/predicted
    waiting_requests: dict[int, int] = field(default_factory=dict)  # priority -> not started
    s_per_start: float = 0.0  # measured seconds between starts while requests wait (0: none)
    # priority -> wait share of the tiers this replica is behind on: a request still waiting
    # for its first token has waited that share of its TTFT target, more than admission
    # allows before lower tiers yield (``AdmissionConfig.yield_to_late_tier``)
    late_tiers: dict[int, float] = field(default_factory=dict)
    format: int = LOAD_FORMAT

    def to_stats(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any] | None) -> ReplicaLoad | None:
        """The load in ``stats``, or None when absent or from another format."""
        if not stats or stats.get("format") != LOAD_FORMAT:
            return None
        try:
            return cls(**{k: stats[k] for k in cls.__dataclass_fields__ if k in stats})
        except TypeError:
            return None

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.ts

    def is_full_for(self, priority: int, extra_requests: int = 0) -> bool:
        """True when the replica would refuse a request of ``priority`` for want of room."""
        limit = self.hold_limits.get(priority)
        return limit is not None and self.queue_len + extra_requests >= limit

    def late_tier_above(self, priority: int) -> tuple[int, float] | None:
        """The higher tier (priority, wait share) this replica is most behind on, if any."""
        late = [(p, w) for p, w in self.late_tiers.items() if p < priority]
        return max(late, key=lambda pw: pw[1]) if late else None

    def refuses(self, priority: int, extra_requests: int = 0) -> bool:
        """True when the replica would refuse a request of ``priority`` whatever its
        predicted TTFT: full for the tier, or behind on a higher one."""
        return (self.is_full_for(priority, extra_requests)
                or self.late_tier_above(priority) is not None)

    def tokens_ahead(self, priority: int) -> int:
        return sum(n for p, n in self.waiting_tokens.items() if p <= priority)

    def requests_ahead(self, priority: int) -> int:
        return sum(n for p, n in self.waiting_requests.items() if p <= priority)

    def modelled_ttft_s(self, priority: int, prompt_len: int, extra_tokens: int = 0,
                        extra_requests: int = 0) -> float:
        """The queue formula's TTFT, before the measured correction. ``extra_*``: routed here
        and not in this snapshot yet."""
        prefill_wait = (self.tokens_ahead(priority) + extra_tokens) * self.s_per_prefill_token
        start_wait = (self.requests_ahead(priority) + extra_requests) * self.s_per_start
        return self.step_s + max(prefill_wait, start_wait) + prompt_len * self.s_per_prefill_token

    def predicted_ttft_s(self, priority: int, prompt_len: int, extra_tokens: int = 0,
                         extra_requests: int = 0) -> float:
        """TTFT a new request of ``priority`` would see; ``extra_*``: routed, not yet seen."""
        scale = self.ttft_scale.get(priority, 1.0)
        return scale * self.modelled_ttft_s(priority, prompt_len, extra_tokens, extra_requests)

    def slack_s(self, priority: int, ttft_target_s: float, prompt_len: int,
                extra_tokens: int = 0, extra_requests: int = 0) -> float:
        return ttft_target_s - self.predicted_ttft_s(priority, prompt_len, extra_tokens,
                                                     extra_requests)


@dataclass
class KVUsage:
    """The engine's KV blocks: in use at the last step, of ``total`` (None until reported)."""

    used: int | None = None
    total: int | None = None
    as_of: float | None = None  # wall time of the step that reported ``used``

    def to_stats(self) -> dict[str, Any]:
        return {"kv_blocks_used": self.used, "kv_blocks_total": self.total,
                "kv_as_of": self.as_of}


@dataclass
class TTFTCorrection:
    """Per tier, the running ratio of measured to predicted TTFT on this replica.

    A request's prediction (``ReplicaLoad.modelled_ttft_s`` when admitted) is compared with the
    time from its admission to its first token. Only requests predicted to wait at least
    ``min_fraction`` of their tier's TTFT target count: below that the ratio is dominated by a
    step's jitter, not by the queue the formula models. One ratio moves the scale at most
    ``ema`` of the way, and ratios are clamped to [``lo``, ``hi``] (one stalled request does not
    shut admission). ``scales`` also takes, per tier, the request waiting longest for its first
    token: its age over its prediction is a lower bound of its own ratio, known before the
    token arrives."""

    ema: float = 0.2
    lo: float = 0.5
    hi: float = 8.0
    min_fraction: float = 0.1
    scale: dict[int, float] = field(default_factory=dict)

    def observe(self, priority: int, predicted_s: float, measured_s: float,
                target_s: float) -> None:
        if not self._counts(predicted_s, target_s) or measured_s <= 0:
            return
        ratio = self._clamp(measured_s / predicted_s)
        old = self.scale.get(priority, 1.0)
        self.scale[priority] = old + self.ema * (ratio - old)

    def scales(self, waiting: Mapping[int, tuple[float, float, float]]) -> dict[int, float]:
        """The scale per tier given ``waiting``: priority -> (predicted, age, target) of the
        request of that tier waiting longest for its first token."""
        out = dict(self.scale)
        for priority, (predicted_s, age_s, target_s) in waiting.items():
            if self._counts(predicted_s, target_s):
                bound = self._clamp(age_s / predicted_s)
                if bound > out.get(priority, 1.0):
                    out[priority] = bound
        return out

    def _counts(self, predicted_s: float, target_s: float) -> bool:
        """A prediction long enough to be judged (class docstring)."""
        return predicted_s > 0 and predicted_s >= self.min_fraction * target_s

    def _clamp(self, ratio: float) -> float:
        return min(max(ratio, self.lo), self.hi)


@dataclass
class StartPace:
    """Seconds between the replica's request starts (first tokens) while requests wait.

    A gap counts only when, at the start that opened it, requests were still waiting: the
    engine was then busy with a queue, so the gap is its service pace, not a lull in arrivals.
    Running average with weight ``ema``; 0 until ``min_gaps`` gaps were seen."""

    ema: float = 0.2
    min_gaps: int = 3
    s_per_start: float = 0.0
    gaps: int = 0
    _last: float | None = None
    _queued_at_last: bool = False

    def started(self, now: float, still_waiting: int) -> None:
        if self._last is not None and self._queued_at_last and now >= self._last:
            gap = now - self._last
            self.gaps += 1
            self.s_per_start = gap if self.gaps == 1 else \
                self.s_per_start + self.ema * (gap - self.s_per_start)
        self._last, self._queued_at_last = now, still_waiting > 0

    @property
    def value(self) -> float:
        return self.s_per_start if self.gaps >= self.min_gaps else 0.0
