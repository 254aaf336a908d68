"""Tier mixes: which fraction of requests belongs to each SLO tier."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from slidingserve.slo import TierSet


class TierMixError(ValueError):
    """A tier mix is invalid; the message names the bad entry."""


def parse_tier_mix(text: str, tiers: TierSet) -> dict[str, float]:
    """Parse ``interactive=0.2,standard=0.5,batch=0.3`` into normalised shares.

    Tiers left out get share 0. Shares must be non-negative numbers summing to > 0.
    """
    shares: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq:
            raise TierMixError(f"tier mix entry {item!r}: expected NAME=SHARE")
        if name not in tiers:
            raise TierMixError(
                f"tier mix entry {item!r}: unknown tier {name!r} (known: {', '.join(tiers)})"
            )
        if name in shares:
            raise TierMixError(f"tier mix entry {item!r}: tier {name!r} given twice")
        try:
            share = float(value)
        except ValueError:
            raise TierMixError(
                f"tier mix entry {item!r}: share {value.strip()!r} is not a number"
            ) from None
        if not (share >= 0 and np.isfinite(share)):
            raise TierMixError(f"tier mix entry {item!r}: share must be >= 0 (got {value.strip()})")
        shares[name] = share
    return normalise_mix(shares, tiers)


def normalise_mix(shares: Mapping[str, float], tiers: TierSet) -> dict[str, float]:
    """Validate a mix against ``tiers`` and scale it to sum to 1 (tiers in file order)."""
    for name, share in shares.items():
        if name not in tiers:
            raise TierMixError(f"tier mix: unknown tier {name!r} (known: {', '.join(tiers)})")
        if not (share >= 0 and np.isfinite(share)):
            raise TierMixError(f"tier mix: share of {name!r} must be >= 0 (got {share})")
    total = sum(shares.values())
    if total <= 0:
        raise TierMixError(f"tier mix: shares must sum to > 0 (got {dict(shares)})")
    return {name: shares.get(name, 0.0) / total for name in tiers}


def top_tier_mix(tiers: TierSet, share: float) -> dict[str, float]:
    """A mix giving ``share`` of the traffic to the most important tier (lowest ``priority``)
    and the rest to the others in proportion to their default shares (equally if those are 0)."""
    if not (0 <= share <= 1):
        raise TierMixError(f"share of the top tier must be in [0, 1] (got {share!r})")
    top = min(tiers.values(), key=lambda t: t.priority).name
    others = {n: s for n, s in tiers.mix().items() if n != top}
    total = sum(others.values())
    if not others:
        return {top: 1.0}
    rest = {n: (s / total if total > 0 else 1.0 / len(others)) * (1.0 - share)
            for n, s in others.items()}
    return normalise_mix({top: share, **rest}, tiers)


def assign_tiers(n: int, mix: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    """Draw a tier for each of ``n`` requests, independently, by the (normalised) mix."""
    names = list(mix)
    p = np.asarray([mix[k] for k in names], dtype=np.float64)
    idx = rng.choice(len(names), size=n, p=p / p.sum())
    return [names[i] for i in idx]
