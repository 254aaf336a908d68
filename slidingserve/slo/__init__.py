"""SLO tiers: targets per tier, loaded from YAML and validated."""

from slidingserve.slo.tiers import (
    BUILTIN_TIERS,
    SLOTier,
    TierConfigError,
    TierSet,
    default_tiers_path,
    load_tiers,
    resolve_tiers_path,
    scale_tiers,
    shipped_file,
)

__all__ = [
    "BUILTIN_TIERS",
    "SLOTier",
    "TierConfigError",
    "TierSet",
    "default_tiers_path",
    "load_tiers",
    "resolve_tiers_path",
    "scale_tiers",
    "shipped_file",
]
