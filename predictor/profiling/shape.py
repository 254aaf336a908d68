"""From one engine step's schedule to its ``BatchShape``.

Same convention as the scheduling core (``slidingserve.policy.batch``): a one-token step of a
request with at most one pending token is a decode whose context is the tokens it holds plus
the one it writes (``num_computed + 1``); everything else is a prefill chunk of ``num_tokens``
after ``num_computed`` tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from slidingserve.latency.features import BatchShape


@dataclass(frozen=True, slots=True)
class ScheduledItem:
    """One request's part of a step, as the engine saw it before running the step."""

    num_tokens: int  # tokens scheduled for it this step
    num_computed: int  # tokens already in its KV cache before the step
    num_pending: int  # tokens it still had to compute before the step (prompt rest, or 1)

    def __post_init__(self) -> None:
        if self.num_tokens <= 0:
            raise ValueError(f"num_tokens must be > 0 (got {self.num_tokens})")
        if self.num_computed < 0:
            raise ValueError(f"num_computed must be >= 0 (got {self.num_computed})")
        if self.num_pending < self.num_tokens:
            raise ValueError(
                f"num_pending {self.num_pending} < num_tokens {self.num_tokens}: "
                "a step cannot run more tokens than are pending"
            )

    @property
    def is_decode(self) -> bool:
        return self.num_tokens == 1 and self.num_pending <= 1


def shape_of_step(items: Iterable[ScheduledItem]) -> BatchShape:
    """The batch shape of a step; prefills and decodes keep the engine's order."""
    prefill: list[tuple[int, int]] = []
    decode: list[int] = []
    for it in items:
        if it.is_decode:
            decode.append(it.num_computed + 1)
        else:
            prefill.append((it.num_tokens, it.num_computed))
    return BatchShape(prefill=tuple(prefill), decode_ctx=tuple(decode))
