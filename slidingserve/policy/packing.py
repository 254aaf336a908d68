"""The budget packer every policy fills its step with.

A ``BudgetPacker`` tracks what is left of one step's resources while a policy adds requests:
tokens (the step's token budget), sequences (``max_num_seqs``) and free KV blocks. Paired
query/command methods: ``fit`` says how many of the wanted tokens would fit, ``add`` commits
them; ``preempt`` frees a running request's blocks (and takes it out of the step if it was
already added). The plan it builds obeys the host contract by construction:

* every key appears at most once in ``scheduled`` and never in both lists;
* ``0 < num_tokens <= request.remaining_prefill`` (the tokens pending for the request);
* the sum of tokens <= the budget, the number of scheduled requests <= ``max_num_seqs``;
* the blocks the scheduled requests need, in order, fit in the free blocks plus the blocks of
  the preempted requests (hosts free ``preempt`` before allocating ``scheduled``).

Blocks a request needs for ``n`` new tokens: ``ceil((num_computed + n) / block_size)`` minus the
blocks it holds. Tokens are also capped so that ``num_computed + n <= max_model_len``.
"""

from __future__ import annotations

from slidingserve.policy.types import KVState, RequestView, SchedulerInput, StepPlan


def pending_tokens(req: RequestView) -> int:
    """Tokens the request could run now: its prefill (or recompute) remainder, 1 for a decode.

    ``req.remaining_prefill`` written out (this is on every packing path)."""
    n = req.prompt_len + req.num_generated - req.num_computed
    return n if n > 0 else 0


class BudgetPacker:
    """Remaining tokens, sequence slots and KV blocks of one step, plus the plan so far."""

    __slots__ = (
        "_block_size",
        "_chosen",
        "_max_model_len",
        "_preempted",
        "free_blocks",
        "preempt",
        "scheduled",
        "seqs_left",
        "tokens_left",
    )

    def __init__(self, token_budget: int, max_seqs: int, kv: KVState, max_model_len: int):
        if token_budget < 0:
            raise ValueError(f"token_budget must be >= 0 (got {token_budget})")
        if max_seqs < 0:
            raise ValueError(f"max_seqs must be >= 0 (got {max_seqs})")
        self.tokens_left = token_budget
        self.seqs_left = max_seqs
        self.free_blocks = kv.free_blocks
        self._block_size = kv.block_size
        self._max_model_len = max_model_len
        self.scheduled: list[tuple[int, int]] = []
        self.preempt: list[int] = []
        self._chosen: dict[int, tuple[int, int]] = {}  # key -> (tokens, blocks) added
        self._preempted: set[int] = set()

    @classmethod
    def for_step(cls, state: SchedulerInput, token_budget: int | None = None) -> BudgetPacker:
        """A packer for ``state``; the budget is capped by the host's ``max_batch_tokens``."""
        limit = state.limits.max_batch_tokens
        budget = limit if token_budget is None else min(token_budget, limit)
        return cls(budget, state.limits.max_num_seqs, state.kv, state.limits.max_model_len)

    # -- queries -------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def blocks_needed(self, req: RequestView, num_tokens: int) -> int:
        total = -(-(req.num_computed + num_tokens) // self._block_size)
        return max(total - req.num_blocks, 0)

    def is_planned(self, key: int) -> bool:
        """True once ``key`` is scheduled or preempted in this step."""
        return key in self._chosen or key in self._preempted

    def token_cap(self, req: RequestView, want: int | None = None) -> int:
        """Tokens allowed by the token budget and the model length (KV and seqs not checked)."""
        pending = pending_tokens(req)
        n = pending if want is None or want > pending else want
        return max(min(n, self.tokens_left, self._max_model_len - req.num_computed), 0)

    def kv_short(self, req: RequestView, num_tokens: int) -> bool:
        """True when the free blocks are too few for ``num_tokens`` more tokens of ``req``."""
        return self.blocks_needed(req, num_tokens) > self.free_blocks

    def fit(self, req: RequestView, want: int | None = None) -> int:
        """The most tokens (<= ``want``, default all pending) ``req`` could add now (0: none)."""
        if self.seqs_left <= 0 or req.key in self._chosen or req.key in self._preempted:
            return 0
        n = self.token_cap(req, want)
        if n <= 0:
            return 0
        if self.blocks_needed(req, n) <= self.free_blocks:
            return n
        # Largest n whose blocks fit: the blocks the request may own in total, in tokens.
        max_total = (req.num_blocks + self.free_blocks) * self._block_size
        return max(min(n, max_total - req.num_computed), 0)

    def can_add(self, req: RequestView, num_tokens: int) -> bool:
        return num_tokens > 0 and self.fit(req, num_tokens) == num_tokens

    # -- commands ------------------------------------------------------------------------------
    def add(self, req: RequestView, num_tokens: int) -> None:
        if not self.can_add(req, num_tokens):
            raise ValueError(
                f"request {req.key}: {num_tokens} tokens do not fit "
                f"(tokens left {self.tokens_left}, seqs left {self.seqs_left}, "
                f"free blocks {self.free_blocks}, pending {pending_tokens(req)})"
            )
        self._commit(req, num_tokens)

    def _commit(self, req: RequestView, num_tokens: int) -> None:
        blocks = self.blocks_needed(req, num_tokens)
        self.tokens_left -= num_tokens
        self.seqs_left -= 1
        self.free_blocks -= blocks
        self._chosen[req.key] = (num_tokens, blocks)
        self.scheduled.append((req.key, num_tokens))

    def add_decodes(self, keys: list[int], blocks: list[int]) -> bool:
        """Add one token for each key (decodes) if all fit together; False (nothing added) if not.

        The caller guarantees the keys are distinct, unplanned and have a token pending;
        ``blocks[i]`` is what ``blocks_needed(request, 1)`` returns for ``keys[i]``.
        """
        n, need = len(keys), sum(blocks)
        if n > self.seqs_left or n > self.tokens_left or need > self.free_blocks:
            return False
        if not self._chosen.keys().isdisjoint(keys) or not self._preempted.isdisjoint(keys):
            raise ValueError("add_decodes: a key is already planned in this step")
        self.tokens_left -= n
        self.seqs_left -= n
        self.free_blocks -= need
        self._chosen.update(zip(keys, zip([1] * n, blocks, strict=True), strict=True))
        self.scheduled.extend(zip(keys, [1] * n, strict=True))
        return True

    def add_fitting(self, req: RequestView, want: int | None = None) -> int:
        """Add as many tokens as fit (up to ``want``); returns the number added (0: none)."""
        n = self.fit(req, want)
        if n > 0:
            self._commit(req, n)  # ``add`` less its check: ``fit`` just made it
        return n

    def preempt_request(self, req: RequestView) -> None:
        """Free a running request's blocks; if it was added this step, give its share back."""
        if req.key in self._preempted:
            raise ValueError(f"request {req.key} preempted twice")
        added = self._chosen.pop(req.key, None)
        if added is not None:
            tokens, blocks = added
            self.tokens_left += tokens
            self.seqs_left += 1
            self.free_blocks += blocks
            self.scheduled.remove((req.key, tokens))
        self.free_blocks += req.freeable_blocks
        self._preempted.add(req.key)
        self.preempt.append(req.key)

    def plan(self, predicted_s: float = 0.0, stats: dict[str, float] | None = None) -> StepPlan:
        return StepPlan(list(self.scheduled), list(self.preempt), predicted_s, dict(stats or {}))


def make_room(
    packer: BudgetPacker, req: RequestView, num_tokens: int, victims: list[RequestView]
) -> bool:
    """Preempt from the end of ``victims`` (least important last) until ``num_tokens`` fit.

    Never preempts ``req`` itself or anything already planned; preempts nothing when even all
    the remaining victims together would not free enough blocks. Consumes ``victims`` from the
    end. Returns True when the tokens' blocks fit afterwards.
    """
    if not packer.kv_short(req, num_tokens):
        return True
    candidates = [v for v in victims if v.key != req.key and not packer.is_planned(v.key)]
    freeable = sum(v.freeable_blocks for v in candidates)
    if packer.blocks_needed(req, num_tokens) > packer.free_blocks + freeable:
        return False
    while packer.kv_short(req, num_tokens):
        victim = victims.pop()
        if victim.key != req.key and not packer.is_planned(victim.key):
            packer.preempt_request(victim)
    return True
