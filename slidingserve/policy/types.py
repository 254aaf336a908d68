"""Plain inputs and outputs of a scheduling policy.

Hosts (the simulator, the vLLM adapter) translate their own request state into these
dataclasses every step and apply the returned ``StepPlan``. Nothing here knows about vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slidingserve.slo import SLOTier


@dataclass(slots=True)
class RequestView:
    """One request as a policy sees it. The output length is never part of it."""

    key: int  # host-assigned handle, stable for the request's life (never vLLM's request id)
    tier: SLOTier  # the tier's targets (possibly tightened per request by the host)
    arrival_s: float  # arrival time on the host's clock
    prompt_len: int  # prompt tokens
    # tokens whose KV is computed (prompt part + generated part); for a waiting request, the
    # prompt prefix the host's prefix cache holds (what admission would start from)
    num_computed: int
    num_generated: int  # output tokens emitted so far
    num_blocks: int = 0  # KV blocks the request holds now (0 when waiting / preempted)
    first_token_s: float | None = None  # when the first output token was emitted
    max_tokens: int | None = None  # the client's output cap, if any (a bound, not a forecast)
    num_preemptions: int = 0  # times the host preempted it
    # of ``num_blocks``, those other requests hold too (a shared cached prefix): preempting
    # this request does not free them
    num_shared_blocks: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens known so far: prompt plus generated."""
        return self.prompt_len + self.num_generated

    @property
    def freeable_blocks(self) -> int:
        """Blocks that preempting this request alone returns to the free pool."""
        return self.num_blocks - self.num_shared_blocks

    @property
    def remaining_prefill(self) -> int:
        """Tokens that still need a forward pass before the next output token."""
        return max(self.num_tokens - self.num_computed, 0)

    @property
    def in_prefill(self) -> bool:
        """True while more than one token is pending (prompt or recompute after preemption)."""
        return self.num_tokens - self.num_computed > 1

    def next_token_deadline(self) -> float:
        """Due time of the next output token under the token-level SLO (and the e2e cap)."""
        due = self.tier.token_deadline(self.arrival_s, self.num_generated + 1)
        if self.tier.e2e_s is not None:
            due = min(due, self.arrival_s + self.tier.e2e_s)
        return due

    def ttft_deadline(self) -> float:
        due = self.arrival_s + self.tier.ttft_s
        if self.tier.e2e_s is not None:
            due = min(due, self.arrival_s + self.tier.e2e_s)
        return due


@dataclass(frozen=True, slots=True)
class KVState:
    """KV-cache capacity as the host reports it."""

    free_blocks: int
    total_blocks: int
    block_size: int

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Hard limits of the host engine; every plan respects them."""

    max_num_seqs: int = 256  # requests per step
    max_batch_tokens: int = 16384  # tokens per step (the engine's compiled/allocated ceiling)
    max_model_len: int = 32768


@dataclass(slots=True)
class SchedulerInput:
    now_s: float
    running: list[RequestView]  # requests holding KV blocks, in the host's order
    waiting: list[RequestView]  # requests not holding KV blocks (new or preempted)
    kv: KVState
    limits: HostLimits


@dataclass(slots=True)
class StepPlan:
    """What to run this step.

    ``scheduled`` is ordered: hosts allocate KV in this order and may stop at the first
    allocation failure (then they preempt from ``preempt`` first). Every key appears once.
    """

    scheduled: list[tuple[int, int]] = field(default_factory=list)  # (key, num_tokens)
    preempt: list[int] = field(default_factory=list)  # running keys to free, in victim order
    predicted_s: float = 0.0  # the policy's predicted step time (0 when it did not predict)
    stats: dict[str, float] = field(default_factory=dict)  # chunk size, planning counters, ...

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)
