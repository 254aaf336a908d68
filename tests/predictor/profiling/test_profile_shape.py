"""Step shapes and features from an engine schedule, on hand-computed batches."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.profiling.shape import ScheduledItem, shape_of_step
from predictor.profiling.sweep import SweepConfig, design_sweep
from slidingserve.latency.features import FEATURE_NAMES, features_of


def test_mixed_step_by_hand() -> None:
    items = [
        ScheduledItem(num_tokens=128, num_computed=0, num_pending=300),  # first chunk of 300
        ScheduledItem(num_tokens=1, num_computed=50, num_pending=1),  # decode, ctx 51
        ScheduledItem(num_tokens=1, num_computed=99, num_pending=1),  # decode, ctx 100
        ScheduledItem(num_tokens=1, num_computed=10, num_pending=5),  # 1-token prefill chunk
        ScheduledItem(num_tokens=64, num_computed=256, num_pending=64),  # last chunk
    ]
    shape = shape_of_step(items)
    assert shape.prefill == ((128, 0), (1, 10), (64, 256))
    assert shape.decode_ctx == (51, 100)
    x = dict(zip(FEATURE_NAMES, features_of(shape).tolist(), strict=True))
    assert x == {
        "prefill_tokens": 193.0,
        "prefill_reqs": 3.0,
        "decode_reqs": 2.0,
        "decode_ctx_sum": 151.0,
        "decode_ctx_max": 100.0,
        # 128 * (0 + 64) + 1 * (10 + 0.5) + 64 * (256 + 32)
        "prefill_attn_work": 8192.0 + 10.5 + 18432.0,
        "total_tokens": 195.0,
    }


def test_decode_only_and_prefill_only() -> None:
    dec = features_of(shape_of_step([ScheduledItem(1, 7, 1), ScheduledItem(1, 3, 1)]))
    assert dec.tolist() == [0, 0, 2, 12, 8, 0, 2]
    pre = features_of(shape_of_step([ScheduledItem(10, 0, 10)]))
    assert pre.tolist() == [10, 1, 0, 0, 0, 50, 10]


def test_impossible_items_refused() -> None:
    with pytest.raises(ValueError, match="num_pending 3 < num_tokens 4"):
        ScheduledItem(4, 0, 3)
    with pytest.raises(ValueError, match="num_tokens must be > 0"):
        ScheduledItem(0, 0, 3)


def test_sweep_is_deterministic_and_covers_grid() -> None:
    cfg = SweepConfig(seed=3)
    a, b = design_sweep(cfg), design_sweep(cfg)
    assert a == b
    flat = [s for g in a for s in g]
    assert {s.n_decode for s in flat} == set(cfg.decode_counts)
    assert {s.chunk for s in flat if s.n_prefill} == set(cfg.chunk_sizes)
    assert all(0 < s.prompt_len <= cfg.max_model_len // 2 for s in flat if s.n_prefill)
    assert np.all([len({(s.n_decode, s.decode_ctx) for s in g}) == 1 for g in a])


def test_sweep_config_errors_name_field() -> None:
    with pytest.raises(ValueError, match="chunk_sizes"):
        SweepConfig(chunk_sizes=(0, 8))
