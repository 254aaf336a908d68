"""Deadlines as the SLO metrics define them (``slidingserve.metrics.records``).

A request meets its SLO when TTFT <= ``ttft_s``, mean TPOT = (last - first) / (n - 1) <= ``tpot_s``
and, if set, last token - arrival <= ``e2e_s``. The output length n is unknown to a policy, so
the planners pace decodes: token i (1-based) of a request whose first token came at F is due at
``F + (i - 1) * tpot_s`` (sufficient for the mean-TPOT target whatever n is, and slack banked by
early tokens carries over), capped by the end-to-end deadline. Before the first token the next
deadline is the TTFT deadline (capped likewise). Every deadline-aware policy (EDF's token-level
form aside) uses these, so comparisons share one notion of "on time".
"""

from __future__ import annotations

from slidingserve.policy.types import RequestView


def next_due(req: RequestView) -> float:
    """Due time of the request's next output token (TTFT deadline before the first).

    Tiers with ``decode_deadlines: banked`` use QoServe's rule instead of pacing from the first
    token: the token after the g-th is due at ``max(first token, arrival + ttft_s) + (g + 1) *
    tpot_s`` (``slidingserve.slo.tiers``)."""
    if req.num_generated == 0 or req.first_token_s is None:
        return req.ttft_deadline()
    tier = req.tier
    if tier.decode_deadlines == "banked":
        anchor = max(req.first_token_s, req.arrival_s + tier.ttft_s)
        due = anchor + (req.num_generated + 1) * tier.tpot_s
    else:
        due = req.first_token_s + req.num_generated * tier.tpot_s
    if tier.e2e_s is not None:
        due = min(due, req.arrival_s + tier.e2e_s)
    return due


def final_due(req: RequestView) -> float:
    """The end-to-end deadline (infinity for tiers without one)."""
    e2e = req.tier.e2e_s
    return float("inf") if e2e is None else req.arrival_s + e2e
