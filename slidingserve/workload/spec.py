"""Request specs: what a workload hands to a host (simulator or HTTP client)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload. ``output_len`` is known to the host, never to a policy."""

    key: int  # index in the workload, unique
    arrival_s: float  # seconds from the start of the workload
    prompt_len: int  # prompt tokens (>= 1)
    output_len: int  # output tokens the request will generate (>= 1)
    tier: str  # SLO tier name

    def __post_init__(self) -> None:
        if self.prompt_len < 1:
            raise ValueError(f"request {self.key}: prompt_len must be >= 1 (got {self.prompt_len})")
        if self.output_len < 1:
            raise ValueError(f"request {self.key}: output_len must be >= 1 (got {self.output_len})")
        if self.arrival_s < 0:
            raise ValueError(f"request {self.key}: arrival_s must be >= 0 (got {self.arrival_s})")
