"""What the ingress sends an engine replica, and what the replica streams back.

Plain dataclasses (they cross Ray processes by pickling). The router reads the first
positional argument of ``Engine.generate`` as a ``GenerateRequest`` to learn the request's
tier and prefill work.
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
    sampling: Any  # vLLM SamplingParams, or a dict of its fields (max_tokens, temperature, ...)
    arrival_s: float  # wall time the ingress received the request
    # replicas (``unique_id``) that failed this request before its first token: the router
    # sends it elsewhere while another candidate exists
    avoid: tuple[str, ...] = ()

    @property
    def is_resend(self) -> bool:
        """A resend of a request that a replica admitted and then failed before its first
        token: the service has accepted it, so no replica refuses it for load."""
        return bool(self.avoid)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def n(self) -> int:
        """Choices to sample (vLLM's ``n``: the engine runs one sequence per choice)."""
        n = self.sampling.get("n") if isinstance(self.sampling, dict) else self.sampling.n
        return int(n or 1)

    @property
    def logprob_paths(self) -> frozenset[str]:
        """Which of ``logprobs`` and ``prompt_logprobs`` it asks for."""
        get = (self.sampling.get if isinstance(self.sampling, dict)
               else lambda name: getattr(self.sampling, name, None))
        return frozenset(p for p in ("logprobs", "prompt_logprobs") if get(p) is not None)

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the engine computes: every choice prefills the prompt (prefix caching
        is off)."""
        return self.prompt_len * self.n


@dataclass(frozen=True, slots=True)
class Admitted:
    """First message of an accepted stream: the replica admitted the request (maybe
    downgraded) and its engine took it."""

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
    # the refusal holds for every request of the tier whatever its prompt (full for the tier,
    # or behind on a higher tier), not for this prompt's predicted TTFT
    tier_wide: bool = False


StepLogprobs = dict[int, tuple[float, str | None]]
"""One position's logprobs: token id -> (logprob, decoded text), the sampled token first."""


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """New tokens of one choice of a request since its previous delta."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    num_generated: int = 0  # this choice's tokens so far
    index: int = 0  # the choice (0 .. n-1)
    logprobs: list[StepLogprobs] | None = None  # one per token in token_ids, when asked for
    prompt_logprobs: list[StepLogprobs | None] | None = None  # on the first delta, when asked
    stop_reason: int | str | None = None  # the stop string or token id that ended it


@dataclass(frozen=True, slots=True)
class StreamError:
    """The stream ends with an explicit error (nothing accepted is dropped silently)."""

    message: str
    partial: dict[str, Any] = field(default_factory=dict)
    # 400: the engine refused the request's parameters before running it (vLLM's input
    # checks: a client error, as vLLM's own server answers it); as a stream's first message
    # (instead of ``Admitted``) the ingress answers it before any response starts. 500 for
    # everything else
    status: int = 500
    param: str | None = None


StreamEvent = Admitted | Rejected | TokenDelta | StreamError
