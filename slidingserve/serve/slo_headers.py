"""SLO headers: which tier a request asks for, and optional tighter targets within it.

``x-slo-tier: NAME`` picks a tier from the tier file (none: the default tier).
``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` may tighten the tier's targets, never loosen them:
a value must be a positive number no larger than the tier's own target. Every refusal is
an ``SLOHeaderError`` naming the header and the value, answered with HTTP 400.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from slidingserve.slo.tiers import SLOTier, TierSet

TIER_HEADER = "x-slo-tier"
TTFT_HEADER = "x-slo-ttft-ms"
TPOT_HEADER = "x-slo-tpot-ms"
# Response headers.
TIER_ECHO_HEADER = "x-slo-tier"
TTFT_MEASURED_HEADER = "x-ttft-ms"
DOWNGRADED_HEADER = "x-slo-downgraded-from"


@dataclass(frozen=True, slots=True)
class RequestSLO:
    """The SLO one request runs under (targets in seconds)."""

    tier: str
    ttft_s: float
    tpot_s: float
    e2e_s: float | None
    priority: int

    def extra_args(self) -> dict[str, object]:
        """What the engine's scheduler reads from ``SamplingParams.extra_args``."""
        return {
            "slo_tier": self.tier,
            "slo_ttft_ms": self.ttft_s * 1000.0,
            "slo_tpot_ms": self.tpot_s * 1000.0,
        }

    @classmethod
    def of_tier(cls, tier: SLOTier) -> RequestSLO:
        return cls(tier.name, tier.ttft_s, tier.tpot_s, tier.e2e_s, tier.priority)


class SLOHeaderError(ValueError):
    """A bad SLO header; ``header`` and ``value`` name what was wrong."""

    def __init__(self, header: str, value: str, reason: str):
        super().__init__(f"header {header}: {reason} (got {value!r})")
        self.header = header
        self.value = value
        self.reason = reason


def parse_slo_headers(headers: Mapping[str, str], tiers: TierSet) -> RequestSLO:
    """The request's SLO from its headers (lower-case names), validated against ``tiers``."""
    raw_tier = headers.get(TIER_HEADER)
    if raw_tier is None:
        tier = tiers.default
    else:
        name = raw_tier.strip()
        if name not in set(tiers):  # TierSet.__contains__ raises on unknown names
            raise SLOHeaderError(
                TIER_HEADER, raw_tier, f"unknown SLO tier; known tiers: {', '.join(tiers)}"
            )
        tier = tiers[name]
    slo = RequestSLO.of_tier(tier)
    ttft_s = _tightened(headers, TTFT_HEADER, tier.ttft_s, tier.name)
    tpot_s = _tightened(headers, TPOT_HEADER, tier.tpot_s, tier.name)
    return RequestSLO(slo.tier, ttft_s, tpot_s, slo.e2e_s, slo.priority)


def _tightened(headers: Mapping[str, str], header: str, bound_s: float, tier: str) -> float:
    raw = headers.get(header)
    if raw is None:
        return bound_s
    try:
        ms = float(raw.strip())
    except ValueError:
        raise SLOHeaderError(header, raw, "not a number of milliseconds") from None
    if not math.isfinite(ms) or ms <= 0:
        raise SLOHeaderError(header, raw, "must be a positive, finite number of milliseconds")
    if ms > bound_s * 1000.0:
        raise SLOHeaderError(
            header,
            raw,
            f"out of bounds: tier {tier!r} allows at most {bound_s * 1000.0:g} ms "
            "(headers may only tighten a tier's target)",
        )
    return ms / 1000.0
