"""SLO tiers: targets per tier, loaded from YAML and validated."""

from slidingserve.slo.tiers import SLOTier, TierConfigError, TierSet, default_tiers_path, load_tiers

__all__ = ["SLOTier", "TierConfigError", "TierSet", "default_tiers_path", "load_tiers"]
