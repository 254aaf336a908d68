"""SLO metadata of one request, read from ``SamplingParams.extra_args``.

Keys (all optional except where a tier set has no default):

  slo_tier      tier name from the tier file; absent -> the tier set's default tier
  slo_ttft_ms   explicit TTFT target (ms) that tightens/loosens the tier's for this request
  slo_tpot_ms   explicit TPOT target (ms), likewise

An unknown tier or a bad target raises ``SLOError`` naming the key and the value; the engine
refuses such a request (finishes it with an error) instead of scheduling it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from slidingserve.slo import SLOTier
from slidingserve.slo.tiers import TierConfigError, TierSet

TIER_KEY = "slo_tier"
TTFT_KEY = "slo_ttft_ms"
TPOT_KEY = "slo_tpot_ms"


class SLOError(ValueError):
    """A request's SLO metadata is invalid."""


def _target_s(extra: Mapping[str, Any], key: str) -> float | None:
    if key not in extra or extra[key] is None:
        return None
    value = extra[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SLOError(f"extra_args[{key!r}] must be a finite number of ms (got {value!r})")
    if value <= 0:
        raise SLOError(f"extra_args[{key!r}] must be > 0 ms (got {value!r})")
    return float(value) / 1000.0


def tier_of(extra: Mapping[str, Any] | None, tiers: TierSet) -> SLOTier:
    """The (possibly per-request adjusted) tier a request's ``extra_args`` ask for."""
    extra = extra or {}
    name = extra.get(TIER_KEY, tiers.default_name)
    if not isinstance(name, str):
        raise SLOError(f"extra_args[{TIER_KEY!r}] must be a tier name (got {name!r})")
    try:
        tier = tiers[name]
    except TierConfigError as exc:
        raise SLOError(str(exc)) from None
    ttft, tpot = _target_s(extra, TTFT_KEY), _target_s(extra, TPOT_KEY)
    if ttft is None and tpot is None:
        return tier
    return dataclasses.replace(
        tier,
        ttft_s=tier.ttft_s if ttft is None else ttft,
        tpot_s=tier.tpot_s if tpot is None else tpot,
    )


def slo_extra_args(tier: str, ttft_ms: float | None = None, tpot_ms: float | None = None) -> dict:
    """The ``extra_args`` a client sets to ask for ``tier`` (and optional explicit targets)."""
    extra: dict[str, Any] = {TIER_KEY: tier}
    if ttft_ms is not None:
        extra[TTFT_KEY] = ttft_ms
    if tpot_ms is not None:
        extra[TPOT_KEY] = tpot_ms
    return extra
