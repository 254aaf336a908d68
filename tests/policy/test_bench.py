"""The planning benchmark's engine-regime case and its cold (``--gap-ms``) mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slidingserve.policy.bench import CASES, case_state, main


def test_engine_case_matches_the_captured_regime() -> None:
    case = {c.name: c for c in CASES}["cpu-engine-19"]
    state = case_state(case, seed=0)
    assert (len(state.running), len(state.waiting)) == (19, 60)
    assert (state.kv.total_blocks, state.kv.block_size) == (63, 128)
    used = sum(r.num_blocks for r in state.running)
    assert state.kv.free_blocks == 63 - used > 0
    for r in state.running:  # each running request holds exactly the blocks of its tokens
        assert r.num_blocks == -(-r.num_computed // 128)
        assert r.num_computed + 1 <= state.limits.max_model_len
    assert (state.limits.max_num_seqs, state.limits.max_batch_tokens) == (32, 512)


def test_gap_mode_runs_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightgbm")
    out = tmp_path / "bench.json"
    main(["--cases", "cpu-engine-19", "--repeats", "3", "--gap-ms", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    if not results:
        pytest.skip(printed)  # the LightGBM model is missing
    (result,) = results
    assert result["case"] == "cpu-engine-19" and result["gap_ms"] == 1.0
    assert result["repeats"] == 3 and result["plan_requests"] > 0
    assert "1 ms sleep" in printed


def test_negative_gap_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--gap-ms", "-1"])
