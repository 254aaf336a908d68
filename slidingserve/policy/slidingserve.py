"""``slidingserve``: the SlidingServe policy, composed from its four collaborators.

One step (``schedule``), top to bottom:

1. Read the requests into columns (``RequestTable``) and compute each one's next deadline.
2. Sort everything with the ``MultiLevelPrioritySorter`` (protection status, urgency, remaining
   prefill; aging bounds waiting; end-to-end-tier work with ample slack is deferred, shortest
   first).
3. Run every running decode (one token each; with ``pace_decodes``, decodes more than two of
   the largest possible steps ahead of their pace sit out while prefill waits, below); when KV
   is short, preempt from the end of the sorted order (requests that cannot make their
   deadline, then deferrable work, most remaining prefill first, then lowest tier, most slack).
4. Order the prefill queue (sorted, feasible first); when that order is predicted to make
   requests miss their deadlines, the ``BatchConstructor`` (knapsack with deadlines) picks which
   at-risk requests go first, tier by tier (the sorter's levels after aging), never giving up a
   higher tier for lower ones.
5. Size the step's prefill with the ``SlidingChunker`` (this step and the next, jointly; larger
   where that keeps more queued first tokens of the bounding decodes' tier or above on time),
   under the ``KVPacer``'s cap while the KV cache limits the running set
   (``policy/kv_pacer.py``); decodes of end-to-end tiers bound the chunk by the pace their
   deadline needs (below).
6. Pack prefill chunks in queue order under the chunk, ``max_num_seqs`` and KV (keeping a small
   watermark of free blocks when admitting new requests; with ``admit_whole_prompt``, a new
   request starts only when the free KV holds its whole prompt, as vLLM admits), and predict
   the step time.

Nothing is ever dropped: infeasible and given-up requests stay queued behind the others.

Overtaking (``overtake``, on by default). Before step 3, new requests at the head of the
prefill queue (up to the step's token budget) that find no sequence slot or KV left take those
of running requests of a strictly lower tier ranked after them in the order, those with the
least computed work first (the least to recompute; ties from the end of the order): an
interactive request does not wait for running batch work to finish. (Taken from the end of the
order instead, the victims were long-running requests: over a long overload in the simulator
overtaking then recomputed 1.48% of the work, against 0.30%, and 4.97% of the requests were
late, against 4.23%; docs/results.md.) A request never preempts one of its own tier or a
higher one, so tiers cannot evict each other back and forth; nothing is preempted when the
lower-tier victims could not make room anyway. Only requests of tiers without an end-to-end
deadline overtake (``overtake_e2e_tiers``, off by default): a victim's work is recomputed when
it runs again, and under a long overload, tiers with end-to-end deadlines overtaking each
other's work recomputed 64% of all the work in a simulation (docs/results.md; 8.9% with the
option off).

Decode pacing (``pace_decodes``, off by default). Serving every decode every step runs decodes
of loose-TPOT tiers ahead of their pace whenever a tight tier sets the step rate, and each of
those early tokens costs step time that prefill could use (on a CPU engine a decode adds ~1 ms
to a ~20 ms step; on a GPU almost nothing, so there it gains little). With pacing, while the
prefill queue is not empty, a decode whose slack is at least twice the largest step this could
be (all decodes plus a full token budget, x the chunker's safety) skips the step: it stays on
pace even if this step and the next are that long, so no token deadline is put at risk. A step
that would otherwise be empty runs the skipped decodes after all.

End-to-end pace (``e2e_pace``, on by default). A decode of a tier with an end-to-end deadline
has a loose per-token target (its TPOT) until the end-to-end deadline binds, when it is too late
to catch up. Its pace is the time left over the tokens it is expected to still produce (the
learned output length of its tier, ``policy.decode_time``, less the tokens out; at least one):
the chunker takes that as the decode's slack and per-token budget where it is tighter than the
tier's. Not for decodes that could not keep that pace even in a decode-only step (lost either
way: they must not starve the step), nor for tiers below the most important queued prefill (a
lower tier's decode does not slow a higher tier's first token). (Without the pace, the steps
grew once the interactive tier drained and a 45 s end-to-end target was missed by 0.3-2.2 s;
with it, 15 s / 30 s targets under overload: 1,414 / 205 late against 1,617 / 332;
docs/results.md.)

Fitting the decodes (``fit_decodes``, on by default). Every decode adds its KV reads to the
step, and a step has a floor (the weights are read once per step), so when the tightest TPOT is
close to that floor the decodes alone can overrun the tightest decode's slack: at SLO scale 0.25
(interactive 12.5 ms TPOT against a ~10.4 ms one-decode step on the H100 roofline) 30
long-context decodes take 12.5 ms, and interactive requests finished a few microseconds over
their mean TPOT. Then, while prefill waits, decodes of tiers below the tightest decode's whose
slack covers two such steps sit this one out, those with the longest contexts first, as few as
make the step fit, and the step runs no prefill (it catches up; filling the time freed with
prefill left the tight decodes no margin when step times are noisy); if no such set makes it
fit, every decode runs. Nothing waiting: every decode runs (``fixed_decode_steps``).
(docs/results.md: SLO scale 0.25.)

Step-time margin (``step_error``, ``policy/step_error.py``). The chunker fits the predicted
step times a learned margin: measured from how long the planned steps really took, 1 where
they took what was predicted (the simulator's oracle clock: plans unchanged), about 1.15 under
the simulator's fitted step noise.

Ablation flags switch each collaborator off: ``use_sorter`` (FCFS order), ``use_aging``,
``use_deferral`` (the sorter's deferrable level),
``use_sliding_chunker`` (greedy chunking, QoServe's rule without its grid and margin),
``use_batch_constructor``, ``kv_pacer.enabled``, ``e2e_pace``, ``fit_decodes``,
``step_error.enabled``, ``chunker.ttft_floor``, and ``decode_time.quantile`` (None: the fixed
decode reserve).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import (
    F_DECODE_CTX_MAX,
    F_DECODE_CTX_SUM,
    F_DECODE_REQS,
    F_PREFILL_ATTN,
    F_PREFILL_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    decode_features,
    with_prefill_chunks,
)
from slidingserve.policy.base import Policy, PolicyConfig, register_policy
from slidingserve.policy.batch_constructor import BatchConstructor, ConstructorConfig
from slidingserve.policy.chunker import ChunkerConfig, SlidingChunker
from slidingserve.policy.decode_time import DecodeTimeConfig, DecodeTimeEstimator
from slidingserve.policy.kv_pacer import KVPacer, KVPacerConfig
from slidingserve.policy.packing import BudgetPacker, pending_tokens
from slidingserve.policy.sorter import MultiLevelPrioritySorter, SorterConfig
from slidingserve.policy.step_error import StepErrorConfig, StepErrorEstimator
from slidingserve.policy.table import COMPUTED, RequestTable, TableBuilder
from slidingserve.policy.types import RequestView, SchedulerInput, StepPlan
from slidingserve.policy.victims import Victims

_NONE = np.zeros(0, dtype=np.intp)  # no requests (read-only)
_SHORT_QUEUE = 256  # queues up to this long are checked for risk in plain Python


class SlidingServeConfig(PolicyConfig):
    sorter: SorterConfig = SorterConfig()
    chunker: ChunkerConfig = ChunkerConfig()
    constructor: ConstructorConfig = ConstructorConfig()
    kv_pacer: KVPacerConfig = KVPacerConfig()  # shorter steps while KV limits the running set
    # the decode reserve of end-to-end tiers, learned from finished requests (quantile None:
    # the sorter's fixed ``slack_margin_s``)
    decode_time: DecodeTimeConfig = DecodeTimeConfig()
    # a margin on predicted step times learned from the steps' real durations (the oracle: 1)
    step_error: StepErrorConfig = StepErrorConfig()
    use_sorter: bool = True  # False: serve in arrival order (FCFS)
    use_aging: bool = True
    use_deferral: bool = True  # False: no deferrable level (sorter.defer_frac off)
    use_sliding_chunker: bool = True  # False: greedy chunking (window 1)
    use_batch_constructor: bool = True
    overtake: bool = True  # new higher-tier requests take slots/KV of lower-tier running work
    # requests of tiers with an end-to-end deadline overtake too (False, the default: only the
    # tiers without one, whose first token cannot wait for running work to finish)
    overtake_e2e_tiers: bool = False
    pace_decodes: bool = False  # decodes far ahead of pace skip steps while prefill waits
    # when the decodes alone are predicted to overrun the tightest decode's slack, lower-tier
    # decodes with slack for two such steps sit it out (longest contexts first; no prefill then)
    fit_decodes: bool = True
    e2e_pace: bool = True  # end-to-end-tier decodes bound the chunk by the pace they need
    kv_watermark: float = Field(default=0.01, ge=0.0, lt=1.0)  # free fraction kept when admitting
    # a new request starts its prefill only when the free KV (less the watermark) holds its
    # whole prompt ("stop": nothing after it in the queue starts this step either, as vLLM;
    # "skip": later ones that fit may), else on whatever its first chunk needs ("off")
    admit_whole_prompt: Literal["off", "skip", "stop"] = "off"
    rate_decay: float = Field(default=0.9, ge=0.0, lt=1.0)  # EMA of the time per prefill token


_INF = float("inf")


@register_policy("slidingserve")
class SlidingServe(Policy):
    config_cls = SlidingServeConfig
    config: SlidingServeConfig
    # Nothing waiting and no prefill: every decode runs (pacing needs a prefill queue), nothing
    # is preempted when all fit, and the rate EMA only moves on prefill steps.
    fixed_decode_steps = True

    def __init__(self, config: SlidingServeConfig, latency: LatencyModel):
        super().__init__(config, latency)
        c = config
        sorter: dict[str, bool | None] = {"use_aging": c.use_aging and c.sorter.use_aging}
        if not c.use_deferral:
            sorter["defer_frac"] = None
        self.sorter = MultiLevelPrioritySorter(c.sorter.model_copy(update=sorter))
        window = c.chunker.window if c.use_sliding_chunker else 1
        self.chunker = SlidingChunker(c.chunker.model_copy(update={"window": window}))
        self.constructor = BatchConstructor(c.constructor)
        self.kv_pacer = KVPacer(c.kv_pacer, c.chunker.max_chunk)
        self.tables = TableBuilder()  # caches waiting requests' rows between steps
        self.decode_time = DecodeTimeEstimator(c.decode_time)
        self.step_error = StepErrorEstimator(c.step_error)
        self._running: list[RequestView] = []  # the last step's running requests
        self._running_by_key: dict[int, RequestView] | None = None  # (built on first forget)
        probe = float(min(2048, c.chunker.max_chunk))
        t = latency.predict_features(with_prefill_chunks(decode_features([]), np.array([probe]), 0))
        self._s_per_token = float(t[0]) / probe  # EMA of step time per prefill token

    def schedule(self, state: SchedulerInput) -> StepPlan:
        now, table = state.now_s, self.tables.build(state.running, state.waiting)
        self._running, self._running_by_key = state.running, None
        self.step_error.observe(now, state.running)
        packer = BudgetPacker.for_step(state)
        if not len(table):
            return packer.plan()
        # 1. deadlines and predicted service of every request
        due, pending = table.next_due(), table.pending
        service = table.remaining * self._s_per_token  # 0 for decodes
        has_e2e, e2e_due = np.isfinite(table.e2e), table.arrival + table.e2e
        reserve = self.sorter.decode_reserve(due, e2e_due, table.e2e_first, table.e2e,
                                             self._decode_time(table))
        # 2. one order for everything: protection status, urgency, remaining prefill
        order, infeasible = self._sort(now, table, due, service, reserve, has_e2e)
        running, pending_o = order < table.n_running, pending[order]  # in serving order
        victims = Victims(table, order, running)
        # 3. every running decode (unless paced), preempting from the end of the order when KV
        # is short (the prefill queue: running requests with more than one token pending,
        # waiting ones with any; (pending > 1) | (~running & (pending > 0)) as one comparison)
        queue = order[pending_o > running]
        decodes, paced = order[running & (pending_o == 1)], _NONE
        if self.config.overtake and queue.size and table.n_running:
            gone = self._overtake(table, order, queue, packer, state.kv.total_blocks)
            if gone:
                decodes = np.array([i for i in decodes.tolist() if i not in gone], dtype=np.intp)
        if self.config.pace_decodes and queue.size and decodes.size:
            decodes, paced = self._pace(now, table, decodes, due, packer)
        catch_up = False  # decodes sat out to fit the tightest slack: no prefill this step
        if self.config.fit_decodes and queue.size and decodes.size > 1:
            decodes, out = self._fit_decodes(now, table, decodes, due)
            if out.size:
                paced, catch_up = np.concatenate([paced, out]), True
        decodes, ctx = self._run_decodes(table, decodes, victims, packer)
        # 4. the prefill queue; the batch constructor fronts the at-risk requests it can keep
        if self.config.use_batch_constructor and queue.size:
            queue = self._front_at_risk(now, queue, infeasible, due, reserve, service, table)
        # 5. this step's prefill tokens, planned jointly with the next step's
        base = decode_features(ctx)
        queued = pending[queue]
        if catch_up:  # the decodes that sat out give the step back to the tight ones
            limit = 0
        else:
            limit = min(packer.tokens_left, int(queued.sum()), self._kv_room(table, queue, packer))
            limit = self.kv_pacer.limit(limit, lambda top: self._free_chunk(base, top))
        slack, tpot = self._e2e_pace(now, table, due, e2e_due, has_e2e, decodes, queue, base)
        chunk = self.chunker.forced(limit, slack)  # None: search the grid with predictions
        if chunk is None:
            done = self._head_context(table, queue, queued, limit)
            first = self._first_token_slack(now, table, queue, due, reserve, infeasible,
                                            decodes, slack)
            chunk, _ = self.chunker.plan(self.latency, base, done, limit, slack,
                                         tpot, queued, table.tpot[queue],
                                         self.step_error.margin, first)
        # 6. pack the chunk in queue order and predict the step
        x = self._pack_prefills(table, queue, chunk, victims, packer, state.kv.total_blocks, base)
        if not packer.scheduled and paced.size:  # nothing else could run: no decode sits out
            decodes, ctx = self._run_decodes(table, paced, victims, packer)
            x = decode_features(ctx)
        predicted = float(self.latency.predict_features(x[None, :])[0]) if packer.scheduled else 0.0
        self._observe(predicted, float(x[F_PREFILL_TOKENS]))
        self.decode_time.observe_step(predicted)  # (the decodes' pace)
        if packer.scheduled:  # follow one request to tell the next call is one step later
            if decodes.size:  # (scheduled first)
                v, n = table.views[int(decodes[0])], 1
            else:
                key, n = packer.scheduled[0]
                v = next(r for r in (*state.running, *state.waiting) if r.key == key)
            self.step_error.planned(now, predicted, v.key, v.num_computed + n)
        self.kv_pacer.observe(int(x[F_PREFILL_TOKENS]), packer.free_blocks, state.kv.total_blocks,
                              waiting=bool(state.waiting), preempted=bool(packer.preempt))
        stats = {"chunk": float(chunk), "prefill_tokens": float(x[F_PREFILL_TOKENS]),
                 "decodes": float(decodes.size), "infeasible": float(np.count_nonzero(infeasible))}
        return packer.plan(predicted, stats)

    def forget(self, key: int) -> None:
        self.tables.forget(key)
        if self.decode_time.enabled:  # its output length, for the decode reserve
            if self._running_by_key is None:
                self._running_by_key = {v.key: v for v in self._running}
            v = self._running_by_key.pop(key, None)
            if v is not None and v.tier.e2e_s is not None:
                self.decode_time.record(v.tier.priority, v.num_generated)

    def _decode_time(self, table: RequestTable) -> np.ndarray | None:
        """Predicted decode time of each request (``policy.decode_time``); None: unknown, or
        no end-to-end-tier request waits for its first token (nothing to reserve for)."""
        if not self.decode_time.enabled or not table.e2e_first.any():
            return None
        return self.decode_time.estimate(table.priority)

    def _overtake(
        self, table: RequestTable, order: np.ndarray, queue: np.ndarray, packer: BudgetPacker,
        total_blocks: int,
    ) -> set[int]:
        """Preempt running requests of a lower tier for the new requests at the queue's head
        that find no sequence slot or KV (module docstring: overtaking); returns the rows
        preempted. Plain Python: the head is a few requests, and the usual step (room for all
        of them) returns after one pass over it."""
        n_run, views, prio, e2e = table.n_running, table.views, table.priority, table.e2e
        lowest = float(prio[:n_run].max())
        slots = packer.seqs_left - n_run
        reserve = int(self.config.kv_watermark * total_blocks)
        free = packer.free_blocks - reserve
        tokens = packer.tokens_left - n_run  # what prefill can get after one token per runner
        head: list[tuple[int, int]] = []  # (row, blocks needed) of new requests that lack room
        for i in queue.tolist():
            if tokens <= 0:
                break
            if i < n_run:  # running prefills make room for themselves (Victims)
                continue
            if prio[i] >= lowest:
                break  # no running work of a lower tier to take from (the queue is in order)
            if not self.config.overtake_e2e_tiers and e2e[i] != _INF:
                continue
            r = views[i]
            n = min(r.remaining_prefill, tokens)
            need = packer.blocks_needed(r, n)
            tokens -= n
            if slots >= 1 and free >= need:
                slots, free = slots - 1, free - need
            else:
                head.append((i, need))
        if not head:
            return set()
        rank = np.empty(order.size, dtype=np.intp)
        rank[order] = np.arange(order.size)
        back = order[::-1]
        runners = back[back < n_run]  # from the end of the order (ties), then
        runners = runners[np.argsort(table.computed[runners], kind="stable")]  # least to recompute
        r_rank, r_prio = rank[runners], prio[runners]
        r_free = np.array([views[v].freeable_blocks for v in runners.tolist()], dtype=np.int64)
        kept = np.ones(runners.size, dtype=bool)
        gone: set[int] = set()
        for i, need in head:
            cands = np.flatnonzero(kept & (r_rank > rank[i]) & (r_prio > prio[i]))
            if slots + cands.size < 1 or free + int(r_free[cands].sum()) < need:
                continue  # the lower tiers could not make room: preempt nothing for it
            for k in cands.tolist():
                if slots >= 1 and free >= need:
                    break
                v = int(runners[k])
                packer.preempt_request(views[v])
                gone.add(v)
                kept[k] = False
                slots, free = slots + 1, free + int(r_free[k])
            slots, free = slots - 1, free - need
        return gone

    def _e2e_pace(
        self, now: float, table: RequestTable, due: np.ndarray, e2e_due: np.ndarray,
        has_e2e: np.ndarray, decodes: np.ndarray, queue: np.ndarray, base: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The decodes' slack and per-token budget for the chunker: their next deadline and
        TPOT, tightened to the end-to-end pace where it binds (module docstring)."""
        slack, tpot = due[decodes] - now, table.tpot[decodes]
        if not self.config.e2e_pace or not decodes.size or not self.decode_time.learned:
            return slack, tpot
        levels = table.priority[decodes]
        on = has_e2e[decodes]
        if queue.size:  # not below the most important queued prefill
            on &= levels <= table.priority[queue].min()
        if not on.any():
            return slack, tpot
        tokens = self.decode_time.output_tokens_of(levels)  # NaN where unknown
        left = np.maximum(tokens - table.generated[decodes], 1.0)
        with np.errstate(invalid="ignore"):
            pace = np.where(on, (e2e_due[decodes] - now) / left, np.nan)
            if np.isnan(pace).all():  # no end-to-end decode with a learned length
                return slack, tpot
            keepable = pace >= float(self.latency.predict_features(base[None, :])[0])
        if not keepable.any():  # (NaN compares False)
            return slack, tpot
        return (np.where(keepable, np.minimum(slack, pace), slack),
                np.where(keepable, np.minimum(tpot, pace), tpot))

    def _first_token_slack(
        self, now: float, table: RequestTable, queue: np.ndarray, due: np.ndarray,
        reserve: np.ndarray, infeasible: np.ndarray, decodes: np.ndarray, slack: np.ndarray,
    ) -> np.ndarray | None:
        """Per queued request, the time left to its first token's planning deadline (the one
        the batch constructor plans for), or infinity where it may not raise the chunk: below
        the tier of the most important decode that bounds the step, or infeasible. None when
        the chunker's TTFT floor is off (``chunker.ttft_floor``)."""
        if not self.chunker.config.ttft_floor:
            return None
        bound = slack >= -self.chunker.config.late_tolerance_s
        if not bound.any():
            return None
        top = table.priority[decodes[bound]].min()
        left = due[queue] - reserve[queue] - now
        return np.where((table.priority[queue] <= top) & ~infeasible[queue], left, np.inf)

    @staticmethod
    def _head_context(
        table: RequestTable, queue: np.ndarray, queued: np.ndarray, limit: int
    ) -> float:
        """The most tokens already computed among the queue's head: the requests up to the one
        whose prefill reaches ``limit`` tokens in all (the chunker's attention context).
        Plain Python, stopping there (a few requests; numpy would make a pass over the queue)."""
        data, done, total = table.data, 0.0, 0.0
        for k, i in enumerate(queue.tolist()):
            computed = data.item(i, COMPUTED)
            if computed > done:
                done = computed
            total += queued.item(k)
            if total >= limit:
                break
        return done

    @staticmethod
    def _kv_room(table: RequestTable, queue: np.ndarray, packer: BudgetPacker) -> int:
        """Prefill tokens the KV cache can take: free blocks plus the unused tail of the blocks
        that queued running requests already hold (a running prefill needs no new block until
        its blocks are full). When neither leaves room but running prefills are queued, only
        preemption can make room, which packing does by the sort order: no KV cap then."""
        bs = packer.block_size
        held = np.maximum(table.blocks[queue] * bs - table.computed[queue], 0.0)
        room = packer.free_blocks * bs + int(held.sum())
        if room == 0 and bool((table.blocks[queue] > 0).any()):
            return packer.tokens_left
        return room

    def _free_chunk(self, base: np.ndarray, top: int) -> int:
        """The largest prefill chunk (up to ``top``) that keeps the step within
        ``kv_pacer.free_tolerance`` of its time without prefill (the pacer's floor)."""
        grid = self.chunker.grid(top)
        t = self.latency.predict_features(with_prefill_chunks(base, grid, 0.0))
        bound = (1.0 + self.config.kv_pacer.free_tolerance) * t[0]
        return int(grid[np.flatnonzero(t <= bound)[-1]])

    def _fit_decodes(
        self, now: float, table: RequestTable, decodes: np.ndarray, due: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split ``decodes`` into (run now, sit out) when the decode-only step is predicted to
        overrun the least slack among them (module docstring: fitting the decodes)."""
        slack = due[decodes] - now
        bound = slack >= -self.chunker.config.late_tolerance_s
        if not bound.any():
            return decodes, _NONE
        tight = int(np.flatnonzero(bound)[np.argmin(slack[bound])])
        s1 = float(slack[tight])
        safety = self.chunker.config.safety * self.step_error.margin
        ctx = table.computed[decodes] + 1.0
        x = decode_features(ctx.tolist())
        t = float(self.latency.predict_features(x[None, :])[0]) * safety
        if t <= s1:
            return decodes, _NONE
        level = table.priority[decodes]  # only lower tiers than the tightest decode's sit out
        spare = np.flatnonzero((slack >= 2.0 * t) & (level > level[tight]))
        if not spare.size:
            return decodes, _NONE
        spare = spare[np.argsort(-ctx[spare], kind="stable")]  # the most KV read first
        out_ctx = ctx[spare]
        kept = np.ones(decodes.size, dtype=bool)
        kept[spare] = False
        rest_max = float(ctx[kept].max()) if kept.any() else 0.0
        k = np.arange(1, spare.size + 1)  # row k - 1: the first k spare decodes sit out
        rows = np.repeat(x[None, :], spare.size, axis=0)
        rows[:, F_DECODE_REQS] -= k
        rows[:, F_TOTAL_TOKENS] -= k
        rows[:, F_DECODE_CTX_SUM] -= np.cumsum(out_ctx)
        rows[:, F_DECODE_CTX_MAX] = np.maximum(rest_max, np.append(out_ctx[1:], 0.0))
        fits = np.flatnonzero(self.latency.predict_features(rows) * safety <= s1)
        if not fits.size:
            return decodes, _NONE
        out = np.zeros(decodes.size, dtype=bool)
        out[spare[: int(fits[0]) + 1]] = True
        return decodes[~out], decodes[out]

    def _pace(
        self, now: float, table: RequestTable, decodes: np.ndarray, due: np.ndarray,
        packer: BudgetPacker,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split ``decodes`` into (run now, sit out): a decode sits out when its slack covers
        twice the largest step this could be (module docstring)."""
        base = decode_features((table.computed[decodes] + 1).tolist())
        full = with_prefill_chunks(base, np.array([float(packer.tokens_left)]), np.array(0.0))
        longest = float(self.latency.predict_features(full)[0]) * self.chunker.config.safety
        ahead = due[decodes] - now >= 2.0 * longest
        return decodes[~ahead], decodes[ahead]

    def _observe(self, predicted_s: float, prefill_tokens: float) -> None:
        """EMA of step time per prefill token (the rate the service estimates use)."""
        if prefill_tokens >= 64:
            d = self.config.rate_decay
            self._s_per_token = d * self._s_per_token + (1 - d) * predicted_s / prefill_tokens

    def _sort(
        self, now: float, table: RequestTable, due: np.ndarray, service: np.ndarray,
        reserve: np.ndarray, has_e2e: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.config.use_sorter:
            return np.argsort(table.arrival, kind="stable"), np.zeros(len(table), dtype=bool)
        return self.sorter.plan(now, due, service, table.priority, table.arrival, table.remaining,
                                _decoding(table.blocks, table.remaining), reserve, table.ttft,
                                has_e2e)

    def _levels(self, now: float, table: RequestTable, rows: np.ndarray) -> np.ndarray:
        """The sorter's protection level of ``rows`` (tier priority after aging)."""
        return self.sorter.protection_level(table.priority[rows], now - table.arrival[rows],
                                            _decoding(table.blocks[rows], table.remaining[rows]))

    def _front_at_risk(
        self, now: float, queue: np.ndarray, infeasible: np.ndarray, due: np.ndarray,
        reserve: np.ndarray, service: np.ndarray, table: RequestTable,
    ) -> np.ndarray:
        """The queue reordered by the BatchConstructor; infeasible requests stay last, in order.
        (A queue of one request is its own answer: the constructor is not asked.)"""
        if queue.size <= 1:
            return queue
        late = infeasible[queue]
        any_late = bool(late.any())
        ok = queue[~late] if any_late else queue
        if ok.size <= 1:  # nothing to reorder among the feasible ones
            return np.concatenate([ok, queue[late]]) if any_late else ok
        at_risk = True  # (a long queue: ``reorder`` checks with numpy)
        if ok.size <= _SHORT_QUEUE:  # the usual case, nothing at risk, checked in plain Python
            rows, svc, d, r = ok.tolist(), service.tolist(), due.tolist(), reserve.tolist()
            at_risk = self.constructor.any_at_risk([svc[i] for i in rows],
                                                   [d[i] - r[i] - now for i in rows])
        if at_risk:
            front = self.constructor.reorder(service[ok], due[ok] - reserve[ok] - now,
                                             table.weight[ok], self._levels(now, table, ok))
            if front is not None:
                ok = ok[front]
        return np.concatenate([ok, queue[late]]) if any_late else ok

    def _run_decodes(
        self, table: RequestTable, decodes: np.ndarray, victims: Victims, packer: BudgetPacker
    ) -> tuple[np.ndarray, list[int]]:
        """Schedule every decode it can (all at once when they fit); returns those scheduled and
        their contexts (``batch.decode_context``: tokens after this step)."""
        # Plain Python on the views: a step has tens of decodes, fewer than numpy calls pay for.
        views, bs = table.views, packer.block_size
        keys, need, ctx = [], [], []
        longest = 0  # most tokens any decode has after this step
        for i in decodes.tolist():
            r = views[i]
            tokens = r.num_computed + 1
            keys.append(r.key)
            more = -(-tokens // bs) - r.num_blocks  # blocks_needed(r, 1)
            need.append(more if more > 0 else 0)
            ctx.append(tokens)
            if tokens > longest:
                longest = tokens
        if longest <= packer.max_model_len and packer.add_decodes(keys, need):
            return decodes, ctx
        done, ctx = [], []
        for i in decodes.tolist():
            r = views[i]
            ok = not packer.is_planned(r.key) and victims.make_room(packer, r, 1)
            if ok and packer.add_fitting(r, 1):
                done.append(i)
                ctx.append(r.num_computed + 1)
        return np.asarray(done, dtype=np.intp), ctx

    def _pack_prefills(
        self, table: RequestTable, queue: np.ndarray, chunk: int, victims: Victims,
        packer: BudgetPacker, total_blocks: int, base: np.ndarray,
    ) -> np.ndarray:
        """Fill ``chunk`` prefill tokens in queue order; returns the step's feature vector."""
        x = base.copy()
        reserve = int(self.config.kv_watermark * total_blocks)
        whole = self.config.admit_whole_prompt
        left, views, bs = chunk, table.views, packer.block_size
        tokens = reqs = 0
        attn = 0.0
        for i in queue:  # lazily: the loop usually stops after a few
            if left <= 0 or packer.seqs_left <= 0:
                break
            r = views[i]
            n = 0 if packer.is_planned(r.key) else packer.token_cap(r, left)
            if n > 0 and r.num_blocks > 0:
                victims.make_room(packer, r, n)
            elif n > 0 and whole != "off" and \
                    packer.blocks_needed(r, pending_tokens(r)) > packer.free_blocks - reserve:
                if whole == "stop":
                    break
                continue
            elif n > 0 and packer.blocks_needed(r, n) > packer.free_blocks - reserve:
                n = min(n, (packer.free_blocks - reserve) * bs - r.num_computed)
            added = packer.add_fitting(r, n) if n > 0 else 0
            if added:
                left -= added
                tokens += added
                reqs += 1
                attn += added * (r.num_computed + added / 2.0)
        if reqs:  # the sums above, in the order the features accumulate them
            x[F_PREFILL_TOKENS] += tokens
            x[F_PREFILL_REQS] += reqs
            x[F_PREFILL_ATTN] += attn
            x[F_TOTAL_TOKENS] += tokens
        return x


def _decoding(blocks: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Running decodes (KV held, prompt done): the requests aging leaves alone. A started
    prefill ages on like a waiting request (``policy/sorter.py``)."""
    return (blocks > 0) & (remaining == 0)

