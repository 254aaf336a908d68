"""The GPU step profiler, exercised on the CPU with tiny dims: sweep bounds, the attention mask,
the KV-cache writes and the raw -> step-trace conversion; plus the committed H100 reference data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from predictor.steptrace import read_steptrace  # noqa: E402
from predictor.torch_profile import (  # noqa: E402
    DIMS,
    Llama,
    Step,
    SweepBounds,
    attention_reference,
    design_sweep,
    main,
)
from slidingserve.latency.features import BatchShape, features_of  # noqa: E402

H100 = Path(__file__).resolve().parents[2] / "predictor" / "data" / "h100"


def test_sweep_respects_bounds_and_covers_groups():
    bounds = SweepBounds(max_tokens=4096, kv_capacity=50_000, max_model_len=8192)
    steps = design_sweep(bounds, seed=3, n_mixed=200)
    assert {s.group for s in steps} == {"decode", "prefill1", "prefillN", "mixed"}
    for s in steps:
        assert 0 < s.total_tokens <= 4096
        assert s.kv_tokens <= 50_000
        assert all(c + d <= 8192 for c, d in s.prefill)
        assert len(s.prefill) <= 4 and len(s.decode_ctx) <= 256
    assert design_sweep(bounds, seed=3, n_mixed=200) == steps  # seeded


def test_attention_reference_is_bottom_right_causal():
    """Brute force: query i of a request with q queries over n keys sees keys 0 .. n-q+i."""
    g = torch.Generator().manual_seed(0)
    q_lens, k_lens = [3, 1], [5, 4]
    q = torch.randn(4, 4, 8, generator=g, dtype=torch.float64)
    k = torch.randn(9, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(9, 2, 8, generator=g, dtype=torch.float64)
    got = attention_reference(torch, q, k, v, q_lens, k_lens)
    qo = ko = 0
    for ql, kl in zip(q_lens, k_lens, strict=True):
        for i in range(ql):
            for h in range(4):
                keys = k[ko : ko + kl - ql + i + 1, h // 2]
                vals = v[ko : ko + kl - ql + i + 1, h // 2]
                w = torch.softmax(keys @ q[qo + i, h] / math.sqrt(8), dim=0)
                torch.testing.assert_close(got[qo + i, h], w @ vals)
        qo, ko = qo + ql, ko + kl


def test_prepare_lays_out_kv_and_forward_writes_new_tokens():
    model = Llama(DIMS["tiny"], "cpu", kv_capacity=4096, seed=0, attention="sdpa")
    step = Step(((5, 7),), (3, 10))
    b = model.prepare(step)
    assert b["cu_q"].tolist() == [0, 5, 6, 7] and b["cu_k"].tolist() == [0, 12, 15, 25]
    assert b["pos"].tolist() == [7, 8, 9, 10, 11, 2, 9]
    assert b["slots"].tolist() == [7, 8, 9, 10, 11, 14, 24]
    before = model.kv[:, :, :25].clone()
    with torch.inference_mode():
        out = model.forward(b)
    assert out.shape == (3,) and int(out.min()) >= 0 and int(out.max()) < DIMS["tiny"].vocab
    changed = (model.kv[:, :, :25] != before).any(dim=(0, 1, 3, 4)).nonzero().flatten().tolist()
    assert changed == [7, 8, 9, 10, 11, 14, 24]
    with pytest.raises(ValueError, match="KV slots"):
        model.prepare(Step(((4000, 200),), ()))


def test_profile_then_convert_roundtrip(tmp_path):
    out = tmp_path / "prof"
    rc = main(
        ["profile", "--out", str(out), "--dims", "tiny", "--kv-capacity", "3000",
         "--max-tokens", "300", "--max-model-len", "1024", "--n-mixed", "20",
         "--max-seconds", "3", "--repeats", "1", "--warmup", "0", "--cpu"]
    )  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert rows and all(r["median_s"] > 0 for r in rows)
    steps = tmp_path / "steps.csv"
    main(["convert", str(out / "raw.jsonl"), str(steps), "--hardware", "cpu", "--version", "t"])
    trace = read_steptrace(steps)
    assert len(trace) == len(rows)
    shape = BatchShape(
        prefill=tuple(tuple(p) for p in rows[0]["prefill"]), decode_ctx=tuple(rows[0]["decode_ctx"])
    )
    np.testing.assert_allclose(trace.X[0], features_of(shape))


def test_committed_h100_trace_matches_its_raw_measurements():
    trace = read_steptrace(H100 / "steps.csv")
    rows = [json.loads(line) for line in (H100 / "raw.jsonl").read_text().splitlines()]
    assert len(trace) == len(rows) >= 800
    assert set(trace.provenance["hardware"]) == {"NVIDIA H100 80GB HBM3"}
    shapes = [BatchShape(tuple(map(tuple, r["prefill"])), tuple(r["decode_ctx"])) for r in rows]
    np.testing.assert_allclose(trace.X, np.array([features_of(s) for s in shapes]))
    # steps.csv was converted with --latency eager: latency_s is every step's eager median.
    np.testing.assert_allclose(trace.latency_s, [r["median_s"] for r in rows])
