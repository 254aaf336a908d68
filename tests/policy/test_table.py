"""RequestTable columns match the views; the builder's cache never serves stale rows."""

from __future__ import annotations

import numpy as np
from policy_factories import decoding, tier, waiting

from slidingserve.policy.deadlines import next_due
from slidingserve.policy.table import TableBuilder, read_rows
from slidingserve.policy.types import RequestView


def test_columns_match_views_and_deadlines() -> None:
    views = [decoding(1, "interactive", generated=5, first_token_s=0.7),
             decoding(2, "batch", generated=3), waiting(3, "standard", arrival=2.0)]
    t = TableBuilder().build(views[:2], views[2:])
    assert t.key.tolist() == [1, 2, 3]
    assert t.pending.tolist() == [1, 1, 100]
    assert np.isnan(t.first[2]) and t.first[0] == 0.7
    assert np.allclose(t.next_due(), [next_due(v) for v in views])
    assert t.is_running.tolist() == [True, True, False]
    assert t.remaining.tolist() == [0, 0, 100]  # prefill tokens; decodes have none
    assert t.e2e_first.tolist() == [
        float(v.num_generated == 0 and v.tier.e2e_s is not None) for v in views
    ]


def test_cache_follows_requests_through_admission_and_preemption() -> None:
    b = TableBuilder()
    w = [waiting(k, "standard", arrival=float(k), prompt=50 + k) for k in range(5)]
    first = b.build([], w)
    assert np.array_equal(first.data, read_rows(w), equal_nan=True)
    assert len(b) == 5
    # request 0 is admitted and runs; then preempted after generating 3 tokens
    r0 = w[0]
    r0.num_computed, r0.num_blocks = 50, 4
    b.build([r0], w[1:])
    assert len(b) == 4  # seen running: dropped from the cache
    r0.num_computed, r0.num_blocks, r0.num_generated, r0.first_token_s = 0, 0, 3, 1.0
    t = b.build([], [r0, *w[1:]])
    assert np.array_equal(t.data, read_rows([r0, *w[1:]]), equal_nan=True)
    b.forget(1)
    assert len(b) == 4


def test_cache_drops_keys_that_left_without_forget() -> None:
    b = TableBuilder()
    b.build([], [waiting(k) for k in range(3000)])
    t = b.build([], [waiting(5000)])
    assert len(b) <= 2 * 1 + 1024 and t.key.tolist() == [5000]


def test_bulk_columns_match_rows_to_the_bit() -> None:
    """``read_columns`` (many rows) computes what ``_row`` does (few rows), bit for bit:
    per-request tier objects, banked and paced decodes, no end-to-end target, preempted
    requests that generated tokens but hold no KV, first tokens before and after the anchor."""
    from dataclasses import replace

    from slidingserve.policy.table import BULK_ROWS, _row, read_columns

    rng = np.random.default_rng(3)
    base = [tier(name) for name in ("interactive", "standard", "batch")]
    tiers = [*base, replace(base[0], decode_deadlines="banked"),
             replace(base[1], e2e_s=None, ttft_s=0.37)]
    views = []
    for k in range(200):
        t = tiers[k % len(tiers)] if k % 7 else replace(tiers[k % 5], ttft_s=0.1 * k + 0.05)
        prompt = int(rng.integers(1, 4000))
        generated = int(rng.integers(0, 50)) if k % 3 else 0
        computed = int(rng.integers(0, prompt + generated + 1))
        arrival = float(rng.uniform(0, 100))
        first = None if generated == 0 or k % 11 == 0 else arrival + float(rng.uniform(0, 8))
        views.append(RequestView(key=k * 1_000_003, tier=t, arrival_s=arrival,
                                 prompt_len=prompt, num_computed=computed,
                                 num_generated=generated, num_blocks=int(computed // 16),
                                 first_token_s=first))
    rows = np.array([_row(v) for v in views], dtype=np.float64)
    bulk = read_columns(views)
    assert bulk.shape == rows.shape
    assert np.array_equal(bulk, rows, equal_nan=True)
    assert len(views) >= BULK_ROWS and np.array_equal(read_rows(views), rows, equal_nan=True)
    assert np.array_equal(read_columns(views[:3]), rows[:3], equal_nan=True)
