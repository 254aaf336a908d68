"""Per-request records and the shared ``summary.json`` metrics (per tier and overall)."""

from slidingserve.metrics.records import RequestRecord, token_due
from slidingserve.metrics.summary import (
    MAX_WINDOWS,
    SUMMARY_FORMAT,
    summarize,
    window_count,
    windows,
    worst_tier_violation_rate,
)

__all__ = ["MAX_WINDOWS", "SUMMARY_FORMAT", "RequestRecord", "summarize", "token_due",
           "window_count", "windows", "worst_tier_violation_rate"]
