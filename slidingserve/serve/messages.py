"""What the ingress sends an engine replica, and what the replica streams back.

Plain dataclasses (they cross Ray processes by pickling). The router reads the first
positional argument of ``Engine.generate`` as a ``GenerateRequest`` to learn the request's
tier and prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slidingserve.serve.slo_headers import RequestSLO


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    request_id: str
    prompt_token_ids: list[int]
    slo: RequestSLO
    sampling: dict[str, Any]  # SamplingParams fields (max_tokens, temperature, ...)
    arrival_s: float  # wall time the ingress received the request

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)


@dataclass(frozen=True, slots=True)
class Admitted:
    """First message of every stream: the replica accepted the request (maybe downgraded)."""

    replica: str
    slo: RequestSLO  # the SLO it will run under
    downgraded_from: str | None
    predicted_ttft_s: float


@dataclass(frozen=True, slots=True)
class Rejected:
    """The only message of a refused stream: every replica's predicted TTFT misses."""

    replica: str
    predicted_ttft_s: float
    target_s: float
    retry_after_s: int
    reason: str = ""  # why, when not the TTFT prediction (a tier's share of the replica full)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """New tokens of one request since the previous delta."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    num_generated: int = 0


@dataclass(frozen=True, slots=True)
class StreamError:
    """The stream ends with an explicit error (nothing accepted is dropped silently)."""

    message: str
    partial: dict[str, Any] = field(default_factory=dict)


StreamEvent = Admitted | Rejected | TokenDelta | StreamError
