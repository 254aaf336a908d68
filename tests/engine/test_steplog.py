"""The engine's step log: a bounded window of recent steps, written in step-trace format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predictor.steptrace import Provenance, read_steptrace
from slidingserve.engine.steps import PreemptionTally, StepLog
from slidingserve.latency.features import F_PREFILL_TOKENS, F_TOTAL_TOKENS, N_FEATURES

PROV = Provenance(engine="vllm-cpu", model="tiny", hardware="test", version="0")


def _step(log: StepLog, i: int, predicted: float = 0.01, cut: int = 0):
    x = np.zeros(N_FEATURES)
    x[F_PREFILL_TOKENS] = x[F_TOTAL_TOKENS] = i  # a consistent prefill-only row, tagged i
    log.scheduled(x, {"predicted_s": predicted, "cut": cut, "plan_s": 1e-4})
    return log.finished("v1")


def test_window_keeps_the_most_recent_steps_and_flushes_them(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    log = StepLog(PROV, "slidingserve", path, flush_every=4, keep=5)
    timings = [_step(log, i) for i in range(12)]
    assert log.total == 12 and log.held == 5
    assert all(t is not None and t.latency_s > 0 and t.predicted_s == 0.01 for t in timings)
    trace = read_steptrace(path)  # written at step 12 (flush_every=4)
    assert len(trace) == 5
    assert trace.X[:, F_PREFILL_TOKENS].tolist() == [7, 8, 9, 10, 11]
    log.flush_if_dirty()  # nothing new
    _step(log, 12, cut=1)
    log.flush_if_dirty()
    assert read_steptrace(path).X[:, F_PREFILL_TOKENS].tolist() == [8, 9, 10, 11, 12]


def test_finished_without_a_step_is_none_and_cut_is_reported() -> None:
    log = StepLog(PROV, "slidingserve")
    assert log.finished("v1") is None
    t = _step(log, 0, cut=1)
    assert t is not None and t.cut
    with pytest.raises(ValueError, match="keep"):
        StepLog(PROV, "x", keep=0)


def test_a_step_with_work_beyond_its_features_is_left_out() -> None:
    """A step with one-off work (an engine's first logprobs) costs more than its shape says:
    no row, no timing (so neither the predictor nor the online correction learns from it)."""
    log = StepLog(PROV, "slidingserve")
    x = np.zeros(N_FEATURES)
    x[F_PREFILL_TOKENS] = x[F_TOTAL_TOKENS] = 512
    log.scheduled(x, {"predicted_s": 0.1, "cut": 0}, recorded=False)
    assert log.finished("v1") is None
    assert log.total == 0 and log.unrecorded == 1 and not log.held
    assert _step(log, 3) is not None and log.total == 1


def test_preemption_tally_counts_and_resets() -> None:
    tally = PreemptionTally()
    assert tally.take() == {"preempted": 0.0, "preempted_tokens": 0.0}
    tally.note(300)
    tally.note(17)
    assert tally.take() == {"preempted": 2.0, "preempted_tokens": 317.0}
    assert tally.take() == {"preempted": 0.0, "preempted_tokens": 0.0}


def test_rewrites_stay_cheap_per_step_as_the_window_fills(tmp_path: Path, monkeypatch) -> None:
    """Each rewrite writes every row held, so a fixed period would make each step dearer as
    the window fills; the rows written per step stay under ``1 / rewrite_share``, while a small
    window is still written every ``flush_every`` steps."""
    import slidingserve.engine.steps as steps_mod

    written: list[tuple[int, int]] = []  # (step, rows written)
    real = steps_mod.write_steptrace

    def counting(trace, path):
        written.append((log.total, len(trace)))
        return real(trace, path)

    monkeypatch.setattr(steps_mod, "write_steptrace", counting)
    log = StepLog(PROV, "slidingserve", tmp_path / "steps.csv", flush_every=4, keep=4000)
    for i in range(8000):
        _step(log, i)
    assert [s for s, _ in written[:3]] == [4, 8, 12]  # a new replica's rows go out at once
    per_step = sum(n for _, n in written) / log.total
    assert per_step <= 1 / log.rewrite_share + 1, per_step  # every 4 steps: 750 here
    assert log.rewrite_period == 500
    log.flush_if_dirty()  # the idle rewrite catches up with the steps since the last one
    assert read_steptrace(tmp_path / "steps.csv").X[-1, F_PREFILL_TOKENS] == 7999
    with pytest.raises(ValueError, match="rewrite_share"):
        StepLog(PROV, "x", rewrite_share=0.0)


def test_the_ring_keeps_every_column_in_step_order_across_the_wrap(tmp_path: Path) -> None:
    """Features, latencies and extra columns (numbers and strings) come out oldest first after
    the window wrapped; a model version changing mid-window is written row by row."""
    path = tmp_path / "steps.parquet"
    log = StepLog(PROV, "slidingserve", path, flush_every=1000, keep=7)
    for i in range(17):
        x = np.zeros(N_FEATURES)
        x[F_PREFILL_TOKENS] = x[F_TOTAL_TOKENS] = i
        log.scheduled(x, {"predicted_s": i / 1000, "cut": 0})
        log.finished("v1" if i < 13 else "v2")
    assert log.held == 7 and log.X[:, F_PREFILL_TOKENS].tolist() == list(range(10, 17))
    assert log.extra["predicted_s"].tolist() == [i / 1000 for i in range(10, 17)]
    assert len(log.latency_s) == 7 and (log.latency_s > 0).all()
    log.flush()
    trace = read_steptrace(path)
    assert trace.X[:, F_PREFILL_TOKENS].tolist() == list(range(10, 17))
    assert trace.extra["latency_version"].tolist() == ["v1"] * 3 + ["v2"] * 4
    assert set(trace.extra["policy"].tolist()) == {"slidingserve"}
    assert trace.extra["predicted_s"].tolist() == [i / 1000 for i in range(10, 17)]
