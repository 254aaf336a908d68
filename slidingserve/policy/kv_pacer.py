"""KV pacing: shorter steps when the KV cache, not the token budget, limits the running set.

Little's law ties step time to KV: every running request decodes one token per step, so for a
given output rate the number of requests decoding at once grows with the step time, and each
holds its context in the KV cache. When long steps (a deadline-driven chunker filling a loose
TPOT target) push that running set past the cache, new requests cannot start and running ones
are preempted and recomputed. Measured on ShareGPT lengths (prompts of ~2,300 tokens, outputs
of ~440) on the roofline H100, and at twice the default tiers' targets on the conversation
trace, that loop cost SlidingServe 15-25% of its capacity against fixed-budget schedulers whose
shorter steps keep the running set inside the cache.

``KVPacer`` caps the step's prefill chunk, multiplicative decrease and increase on one observed
signal, *pressure*: the plan preempts, or once it is planned free KV is below ``free_frac`` of
the cache while requests wait to start. Under pressure the cap drops to ``decrease`` x this
step's chunk (never below ``min_chunk``); a step that runs prefill without pressure raises it
by ``increase`` until it no longer binds. While the cache has room the pacer never acts, so it
changes nothing where KV is not the limit.

Nor does it cap below the chunk that costs no step time: on a memory-bound step (many decodes
reading long contexts) prefill up to the point where compute catches up is free, and steps that
leave it unused run the same work slower (measured: a pacer without this floor spread its
chunks from 280 to 1,340 tokens and ran 10% fewer tokens per second than a fixed 768-token
chunk).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

_IDLE = float("inf")


class KVPacerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    free_frac: float = Field(default=0.05, gt=0.0, lt=1.0)  # pressure: free KV below this
    decrease: float = Field(default=0.9, gt=0.0, lt=1.0)  # cap x this step's chunk on pressure
    increase: float = Field(default=1.02, gt=1.0, le=2.0)  # cap growth per prefill step
    min_chunk: int = Field(default=256, ge=1)  # the cap never goes below this
    # "free" prefill: what keeps the step within this fraction of its time without prefill
    free_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)


class KVPacer:
    """The prefill-chunk cap of the next step, from KV pressure seen after each step."""

    def __init__(self, config: KVPacerConfig, ceiling: int):
        self.config = config
        self.ceiling = float(ceiling)  # a cap at or above this binds nothing: idle again
        self.cap = _IDLE  # no cap until pressure is seen

    def limit(self, tokens: int, free_chunk: Callable[[int], int]) -> int:
        """``tokens`` capped by the pacer (unchanged while it is off or idle), but never below
        ``free_chunk(tokens)``, the prefill that costs the step no time (module docstring)."""
        if not self.config.enabled or self.cap >= tokens:
            return tokens
        return max(int(self.cap), free_chunk(tokens))

    def observe(
        self, chunk: int, free_blocks: int, total_blocks: int, waiting: bool, preempted: bool
    ) -> None:
        """Update the cap after a step that planned ``chunk`` prefill tokens and leaves
        ``free_blocks`` of ``total_blocks`` free; ``waiting``: requests wait to start;
        ``preempted``: the plan preempts."""
        c = self.config
        if not c.enabled:
            return
        if preempted or (waiting and free_blocks < c.free_frac * total_blocks):
            if chunk > 0 or self.cap != _IDLE:  # a decode-only step sets no first cap
                top = min(self.cap, float(chunk)) if chunk > 0 else self.cap
                self.cap = max(float(c.min_chunk), c.decrease * top)
        elif chunk > 0 and self.cap != _IDLE:  # decode-only steps leave it: the simulator
            self.cap *= c.increase  # skips those without asking the policy
            if self.cap >= self.ceiling:
                self.cap = _IDLE
