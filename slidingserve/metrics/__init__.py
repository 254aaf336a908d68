"""Per-request records and the shared ``summary.json`` metrics (per tier and overall)."""

from slidingserve.metrics.records import RequestRecord, token_due
from slidingserve.metrics.summary import (
    SUMMARY_FORMAT,
    summarize,
    windows,
    worst_tier_violation_rate,
)

__all__ = ["SUMMARY_FORMAT", "RequestRecord", "summarize", "token_due", "windows",
           "worst_tier_violation_rate"]
