"""SlidingChunker: the prefill chunk of this step, chosen jointly with the next step's.

Rule. Let ``t(c)`` be the predicted time of this step's decodes plus ``c`` prefill tokens, and
``S1`` the tightest decode slack now (the smallest ``next deadline - now`` over the decodes in
the step, decodes already later than ``late_tolerance_s`` excluded: they are lost either way and
must not starve the step). After step 1 every decode has emitted a token, so decode ``i``'s
slack for step 2 is ``s_i + tpot_i - t(c1)``; a request whose prefill completes within ``c1``
tokens becomes a decode whose first slack is its tier's TPOT. ``S2(c1)`` is the smallest of
those. With ``c2(c1) = max{c <= L - c1 : t(c) * safety <= S2(c1)}`` (L: the prefill tokens known
to be waiting, so step 2 never counts work that does not exist), the chunker picks

    c1* = argmax_{c1 : t(c1) * safety <= S1}  c1 + c2(c1)      (ties: the larger c1)

over a grid of chunk sizes (``granularity`` tokens apart, up to ``max_chunk``). Greedy
slack-driven chunking (QoServe) is the special case ``window = 1``: the largest c1 that fits.

Invariant: whenever the deadlines can be met (some c1 fits S1), the chosen step is predicted to
end within every non-late decode's slack, ``t(c1*) * safety <= S1``, so the look-ahead only ever
trades this step's tokens for the next step's, never a deadline. When nothing fits (S1 < t(0)),
the chunk is 0: a decode-only step, the fastest possible. Without decodes there is no slack
bound and the chunk is ``max_chunk``.

Progress floor (``min_chunk``, 0 = off): the chunk is never below ``min(min_chunk, L)``. The
TPOT target is judged on the mean over a request's output, so a step that overruns one decode's
slack is recoverable in the steps after it, while a prefill stalled behind always-tight decodes
(on the CPU engine: each new interactive decode has one TPOT of slack, so steps with a stream
of them never fit a chunk) delays first tokens without bound. With the floor, the invariant
above holds for every chunk above ``min_chunk``.

First tokens on time (``ttft_floor``, on by default). The rule above protects the decodes'
TPOT and is blind to the TTFT of the requests queued behind them. Where a decode's pace is
just within reach (on the CPU engine: an interactive decode has one 50 ms TPOT of slack beside
a 45 ms decode-only step), it keeps the chunk at a few tokens step after step while the queue's
first tokens run out of time. So when a larger chunk would keep more of the queue's first
tokens on time, the chunk is the smallest that keeps the most: with steps of ``c`` tokens,
request k's first token comes after ``ceil(T_k / c)`` steps of ``t(c) * safety`` (``T_k``: the
prefill tokens up to and including k's, in serving order; the decodes as in this step). The
policy passes, per queued request, the slack of its first token, or infinity where it may not
raise the chunk (a tier below the most important bounding decode's: a lower tier's first
token does not outrank a higher tier's TPOT; a request the sorter judged infeasible). While
the queue's first tokens have time, the rule above decides alone. A raised step may overrun a
bounding decode's slack only by what ``floor_recovery_steps`` decode-only steps win back at
its TPOT (``tpot - t(0)`` each): the TPOT is judged on the mean, so an overrun is made up in
the steps after it where a decode-only step is short against the TPOT (the CPU engine: 7.6 ms
against 30 ms), and not where it nearly fills it (SLO x 0.25 on an H100: ~12.4 ms against
12.5 ms, where an unbounded floor made interactive requests late by microseconds).

A step-time ceiling (``max_step_s``, off by default). Each running request decodes one token
per step, so the decodes in a step are the output tokens per second times the step time: a
longer step brings more decodes with it. Where a step's decodes cost more than their sum (the
measured H100 model, whose decodes pay for the longest context among them), steps that fill the
interactive TPOT settle at more decodes and fewer prompt tokens per second than shorter ones.
The ceiling bounds every step that some decode bounds (one not already later than
``late_tolerance_s``), as one more decode would with ``max_step_s`` of slack and of TPOT; other
steps are not bounded. No rule derives it from the latency model yet: set it from a capacity
run on the deployment's own model (docs/results.md).

Predicted step time need not grow with the chunk: a learned model of a real engine has cheap
points (kernel tiles, launch-bound floors), where a larger chunk is predicted faster than a
smaller one. ``fits`` reads "some chunk of at least c runs within the slack" from the suffix
minimum of the predictions, so the largest chunk that fits is found even past a slower one,
and a chunk predicted slower than a larger one (dominated) is never chosen. On a model that is
non-decreasing in the chunk (roofline, affine) this is the plain rule above.

Both steps are evaluated from one vector of predictions (its suffix minimum is non-decreasing;
``c2`` is a ``searchsorted`` on it), so the search costs one ``predict_features`` call of
``len(grid)`` rows.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import with_prefill_chunks

# The TTFT floor's search (``SlidingChunker._ttft_floor``) counts the first tokens of at most
# this many queued requests (the head of the serving order), over at most this many candidate
# chunks, evenly spaced from the slack rule's choice to the largest: a few hundredths of a
# millisecond per step however long the queue and the grid.
_FLOOR_ROWS = 128
_FLOOR_COLUMNS = 64


class ChunkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    window: Literal[1, 2] = 2  # steps planned jointly (1 = greedy)
    safety: float = Field(default=1.0, ge=1.0, le=10.0)  # predicted time x safety must fit
    granularity: int = Field(default=16, ge=1)  # chunk grid step in tokens
    max_chunk: int = Field(default=8192, ge=1)  # prefill tokens per step at most
    late_tolerance_s: float = Field(default=0.1, ge=0)  # decodes later than this don't bound
    min_chunk: int = Field(default=0, ge=0)  # prefill progress floor per step, up to the grid
    ttft_floor: bool = True  # the chunk keeps the queue's first tokens on time (docstring)
    # ... overrunning a bounding decode's slack by at most what this many decode-only steps
    # win back at its TPOT (docstring; None: no bound)
    floor_recovery_steps: float | None = Field(default=2.0, ge=0.0)
    # A step that decodes bound is predicted to take at most this long, as if one more decode
    # had this much slack and this TPOT (docstring: a step-time ceiling; None: off)
    max_step_s: float | None = Field(default=None, gt=0.0)


class SlidingChunker:
    def __init__(self, config: ChunkerConfig):
        self.config = config
        self._grids: dict[int, np.ndarray] = {}  # grid by its top (a step's limit repeats)

    def grid(self, limit: int) -> np.ndarray:
        """0, granularity, 2 x granularity, ... up to min(limit, max_chunk), which ends it.

        Read-only: grids are cached by their top."""
        top = min(limit, self.config.max_chunk)
        grid = self._grids.get(top)
        if grid is None:
            g = self.config.granularity
            grid = np.arange(0, top + g, g, dtype=np.float64)  # its last point is >= top
            grid[-1] = top
            grid.flags.writeable = False
            if len(self._grids) >= 1024:
                self._grids.clear()
            self._grids[top] = grid
        return grid

    def forced(self, limit: int, slack: np.ndarray) -> int | None:
        """The chunk ``plan`` returns when the rule alone decides it, so that no prediction is
        needed: 0 when nothing can run (``limit <= 0``), the largest chunk when no decode bounds
        the step (none in it, or all later than ``late_tolerance_s``); None otherwise."""
        if limit <= 0:
            return 0
        if not bool((slack >= -self.config.late_tolerance_s).any()):
            return min(limit, self.config.max_chunk)
        return None

    def plan(
        self,
        latency: LatencyModel,
        base: np.ndarray,
        done: float,
        limit: int,
        slack: np.ndarray,
        tpot: np.ndarray,
        queue_tokens: np.ndarray,
        queue_tpot: np.ndarray,
        margin: float = 1.0,
        queue_slack: np.ndarray | None = None,
    ) -> tuple[int, float]:
        """Prefill tokens for this step and their predicted step time.

        ``base``: features of the step's decodes; ``done``: tokens already computed by the first
        prefill (its attention context); ``limit``: most prefill tokens that could run (budget,
        queue, KV); ``slack``/``tpot``: per decode in the step; ``queue_tokens``/``queue_tpot``:
        remaining prefill and tier TPOT of the prefill queue, in serving order; ``margin``:
        a factor on ``safety`` (the planner's learned step-time margin, ``policy.step_error``);
        ``queue_slack``: per queued request, the time left to its first token's deadline, or
        infinity where it may not raise the chunk (module docstring: first tokens on time).
        """
        cap = self.config.max_step_s
        if cap is not None:
            slack, tpot = np.append(slack, cap), np.append(tpot, cap)
        grid = self.grid(max(limit, 0))
        # A model may offer the same predictions through a faster path (predictor.model's).
        fast = getattr(latency, "predict_prefill_chunks", None)
        if fast is not None:
            t = fast(base, grid, done)
        else:
            t = latency.predict_features(with_prefill_chunks(base, grid, done))
        # u[j]: the fastest predicted step with at least grid[j] tokens (non-decreasing). A
        # chunk whose own time is above it is dominated by a larger one at least as fast.
        u = np.minimum.accumulate(t[::-1])[::-1]
        dominated = t > u
        safety = self.config.safety * margin
        i = self._choose(grid, u, dominated, slack, tpot, queue_tokens, queue_tpot, safety)
        if self.config.ttft_floor and queue_slack is not None and i < len(grid) - 1:
            cap = self._floor_cap(slack, tpot, float(t[0]))
            i = self._ttft_floor(grid, u, dominated, i, queue_tokens, queue_slack, safety, cap)
        floor = min(self.config.min_chunk, int(grid[-1]))
        if grid[i] < floor:
            i = min(int(grid.searchsorted(floor)), len(grid) - 1)
        return int(grid[i]), float(t[i])

    def _floor_cap(self, slack: np.ndarray, tpot: np.ndarray, decode_s: float) -> float:
        """The longest step the TTFT floor may choose: within every bounding decode's slack
        plus what ``floor_recovery_steps`` decode-only steps (``decode_s`` each) win back at its
        TPOT (module docstring; inf: no bound)."""
        r = self.config.floor_recovery_steps
        bounding = slack >= -self.config.late_tolerance_s
        if r is None or not bounding.any():
            return math.inf
        gain = np.maximum(tpot[bounding] - decode_s, 0.0)
        return float((slack[bounding] + r * gain).min())

    @staticmethod
    def _ttft_floor(
        grid: np.ndarray,
        u: np.ndarray,
        dominated: np.ndarray,
        i: int,
        queue_tokens: np.ndarray,
        queue_slack: np.ndarray,
        safety: float,
        cap: float = math.inf,
    ) -> int:
        """The index of the chunk to run: ``i`` (the slack rule's choice), or, when a larger
        chunk whose step fits ``cap`` keeps more queued first tokens on time, the smallest that
        keeps the most (module docstring: first tokens on time); dominated chunks are never
        chosen. Bounded work: ``_FLOOR_ROWS`` requests, ``_FLOOR_COLUMNS`` candidate chunks."""
        rows = np.flatnonzero(queue_slack < np.inf)[:_FLOOR_ROWS]
        if not rows.size:
            return i
        # u x safety is non-decreasing: the chunks within the cap are a prefix
        top = max(int(np.searchsorted(u * safety, cap, side="right")), i + 1)
        if top <= i + 1:
            return i
        tokens = np.cumsum(queue_tokens)[rows][:, None]
        left = queue_slack[rows][:, None]
        cols = np.arange(i, top)
        if cols.size > _FLOOR_COLUMNS:
            cols = np.unique(np.linspace(i, top - 1, _FLOOR_COLUMNS).round().astype(np.intp))
        with np.errstate(divide="ignore", invalid="ignore"):  # (chunk 0: no first token)
            on_time = np.ceil(tokens / grid[cols]) * (u[cols] * safety) <= left
        kept = np.where(dominated[cols], -1, np.count_nonzero(on_time, axis=0))
        kept[0] = np.count_nonzero(on_time[:, 0])  # (the slack rule's choice stands as it is)
        return int(cols[int(np.argmax(kept))])  # (ties: the smallest chunk)

    def _choose(
        self,
        grid: np.ndarray,
        t: np.ndarray,
        dominated: np.ndarray,
        slack: np.ndarray,
        tpot: np.ndarray,
        queue_tokens: np.ndarray,
        queue_tpot: np.ndarray,
        safety: float,
    ) -> int:
        """The rule of the module docstring: the chosen chunk's index in ``grid`` (``t``: the
        fastest predicted step time of a chunk at least each grid chunk, non-decreasing;
        ``dominated``: the chunks predicted slower than a larger one, never chosen).

        Plain Python on lists (``bisect`` for ``searchsorted``): the grid has tens of points, and
        a few dozen numpy calls on such arrays cost more than the loop (the same float operations
        in the same order, so the same choice)."""
        tol = -self.config.late_tolerance_s
        s1 = s2_base = math.inf  # the bounding decodes' least slack now / after one step
        for s, p in zip(slack.tolist(), tpot.tolist(), strict=True):
            if s >= tol:  # (comparisons rather than min(): no call per item)
                if s < s1:
                    s1 = s
                if s + p < s2_base:
                    s2_base = s + p
        if s1 == math.inf:  # no bounding decode
            return len(grid) - 1
        # t x safety is non-decreasing, like t: the chunks that fit are a prefix
        scaled = t.tolist() if safety == 1.0 else (t * safety).tolist()
        fits = bisect_right(scaled, s1)
        if fits == 0:
            return 0
        if self.config.window == 1 or fits == len(grid):
            # (when the whole grid fits, the largest chunk reaches the most any pair can,
            # c1 + c2 <= grid[-1], and ties go to the larger c1)
            return fits - 1
        g, times, worse = grid.tolist(), t.tolist(), dominated.tolist()
        top = g[-1]
        # Walk the queue along the grid: requests finishing their prefill within c1 start
        # decoding, the tightest of their TPOTs bounding step 2 (inf while none finished).
        k, n_queued, done, new_tpot = 0, len(queue_tokens), 0.0, math.inf
        best, best_total = 0, -math.inf
        for j in range(fits):
            c1 = g[j]
            while k < n_queued and done + queue_tokens.item(k) <= c1:
                done += queue_tokens.item(k)
                if queue_tpot.item(k) < new_tpot:
                    new_tpot = queue_tpot.item(k)
                k += 1
            if worse[j]:
                continue
            s2 = s2_base - times[j]
            if new_tpot < s2:
                s2 = new_tpot
            fit2 = bisect_right(scaled, s2) - 1
            c2 = g[fit2] if fit2 > 0 else 0.0  # g[0] == 0
            rest = top - c1
            total = c1 + (c2 if c2 <= rest else rest)
            if total >= best_total:  # ties: the larger c1
                best, best_total = j, total
        return best
