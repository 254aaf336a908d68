"""The designed sweep of batch mixes the profiler runs through a real engine.

A scenario is: ``n_decode`` requests decoding at about ``decode_ctx`` tokens of context, plus
``n_prefill`` prompts of ``prompt_len`` tokens prefilled in chunks of ``chunk`` tokens each
(every chunk step mixes them with the decodes), followed by a few decode-only steps. The grid is
decode counts x decode contexts x (prefill counts x chunk sizes x prompt lengths). Scenarios are
grouped by (n_decode, decode_ctx) so that one set of decoding requests serves several scenarios.
Each group's scenarios are shuffled with ``seed`` and cut into visits of ``visit_size``; the
sweep runs the visits round-robin over the (shuffled) groups, so a time-capped run covers every
(decode count, context) pair before it returns to any of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True, slots=True)
class Scenario:
    n_decode: int
    decode_ctx: int
    n_prefill: int
    chunk: int
    prompt_len: int


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decode_counts: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 24)
    decode_contexts: tuple[int, ...] = (32, 256, 768, 1400)
    prefill_counts: tuple[int, ...] = (0, 1, 2, 3)
    chunk_sizes: tuple[int, ...] = (8, 32, 96, 192, 384, 640)
    # prompt_len = chunk * multiple (+ a seeded jitter), so prompts take 1..N chunk steps
    prompt_multiples: tuple[int, ...] = (1, 3)
    decode_only_steps: int = Field(default=2, ge=0)
    visit_size: int = Field(default=6, ge=1)  # scenarios per visit of a (decodes, context) group
    max_model_len: int = Field(default=2048, gt=0)
    seed: int = 0

    @field_validator("decode_counts", "prefill_counts")
    @classmethod
    def _non_negative(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x < 0 for x in v):
            raise ValueError(f"must be a non-empty list of ints >= 0 (got {list(v)})")
        return v

    @field_validator("decode_contexts", "chunk_sizes", "prompt_multiples")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x <= 0 for x in v):
            raise ValueError(f"must be a non-empty list of ints > 0 (got {list(v)})")
        return v


def design_sweep(config: SweepConfig) -> list[list[Scenario]]:
    """Visits (scenarios sharing one decode count and context), in run order; see the module
    docstring."""
    rng = random.Random(config.seed)
    groups: list[list[Scenario]] = []
    for n_decode in config.decode_counts:
        for ctx in config.decode_contexts:
            if n_decode == 0 and ctx != config.decode_contexts[0]:
                continue  # context is meaningless without decodes
            group: list[Scenario] = []
            for n_prefill in config.prefill_counts:
                if n_prefill == 0:
                    if n_decode > 0:
                        group.append(Scenario(n_decode, ctx, 0, 0, 0))
                    continue
                for chunk in config.chunk_sizes:
                    for mult in config.prompt_multiples:
                        jitter = rng.randint(0, max(chunk // 4, 1))
                        prompt = min(chunk * mult + jitter, config.max_model_len // 2)
                        group.append(Scenario(n_decode, ctx, n_prefill, chunk, prompt))
            rng.shuffle(group)
            groups.append(group)
    rng.shuffle(groups)
    k = config.visit_size
    rounds = max(-(-len(g) // k) for g in groups)
    return [g[r * k : (r + 1) * k] for r in range(rounds) for g in groups if g[r * k : (r + 1) * k]]
