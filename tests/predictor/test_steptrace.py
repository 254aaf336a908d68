"""Step-trace format: round trips, validation errors, aggregation of repeats, the recorder."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from predictor.steptrace import (
    PARQUET_ROW_GROUP_ROWS,
    REQUIRED_COLUMNS,
    Provenance,
    StepRecorder,
    StepTrace,
    StepTraceError,
    aggregate_identical,
    read_steptrace,
    read_steptrace_since,
    write_steptrace,
)
from slidingserve.latency.features import FEATURE_NAMES, BatchShape

PROV = Provenance("vllm-cpu", "tiny@float32", "x86_64-2cpu", "0.32.0")
SHAPES = [
    BatchShape(prefill=((128, 0),), decode_ctx=(10, 20)),
    BatchShape(decode_ctx=(5,)),
    BatchShape(prefill=((32, 64), (16, 0))),
]


def _trace() -> StepTrace:
    return StepTrace.from_shapes(SHAPES, [0.010, 0.002, 0.004], PROV)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    t = _trace()
    back = read_steptrace(write_steptrace(t, tmp_path / f"t.{suffix}"))
    assert np.array_equal(back.X, t.X)
    assert np.array_equal(back.latency_s, t.latency_s)
    assert back.provenance["model"].tolist() == ["tiny@float32"] * 3
    assert back.data_hash() == t.data_hash()


def test_directory_of_files_is_concatenated(tmp_path: Path) -> None:
    write_steptrace(_trace(), tmp_path / "a.csv")
    write_steptrace(_trace(), tmp_path / "b.parquet")
    assert len(read_steptrace(tmp_path)) == 6


def _table(**override: object) -> pa.Table:
    t = _trace().to_table()
    for name, value in override.items():
        i = t.column_names.index(name)
        t = t.set_column(i, name, pa.array([value] * t.num_rows))
    return t


def test_missing_column_is_named(tmp_path: Path) -> None:
    pacsv.write_csv(_trace().to_table().drop(["decode_ctx_max"]), tmp_path / "t.csv")
    with pytest.raises(StepTraceError, match="decode_ctx_max"):
        read_steptrace(tmp_path / "t.csv")


def test_other_schema_version_refused(tmp_path: Path) -> None:
    pacsv.write_csv(_table(schema_version=2), tmp_path / "t.csv")
    with pytest.raises(StepTraceError, match=r"schema_version.*2"):
        read_steptrace(tmp_path / "t.csv")


def test_bad_latency_names_row_and_value() -> None:
    with pytest.raises(StepTraceError, match=r"latency_s.*row 1.*-0\.5"):
        StepTrace.from_shapes(SHAPES, [0.01, -0.5, 0.01], PROV)


def test_swapped_columns_detected(tmp_path: Path) -> None:
    t = _trace().to_table()
    cols = {n: t.column(n) for n in t.column_names}
    cols["prefill_tokens"], cols["total_tokens"] = cols["total_tokens"], cols["prefill_tokens"]
    pacsv.write_csv(pa.table(cols), tmp_path / "t.csv")
    with pytest.raises(StepTraceError, match="total_tokens"):
        read_steptrace(tmp_path / "t.csv")


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StepTraceError, match=r"'\.txt'"):
        write_steptrace(_trace(), tmp_path / "t.txt")
    with pytest.raises(StepTraceError, match="does not exist"):
        read_steptrace(tmp_path / "nope.csv")


def test_garbage_file_refused(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StepTraceError, match="unreadable"):
        read_steptrace(tmp_path / "t.parquet")


def test_required_columns_are_schema_v1() -> None:
    assert REQUIRED_COLUMNS[: len(FEATURE_NAMES)] == FEATURE_NAMES
    assert "latency_s" in REQUIRED_COLUMNS and "schema_version" in REQUIRED_COLUMNS


def test_aggregate_min_and_median() -> None:
    shapes = [SHAPES[1], SHAPES[0], SHAPES[1], SHAPES[0], SHAPES[2]]
    t = StepTrace.from_shapes(shapes, [3.0, 1.0, 2.0, 5.0, 9.0], PROV)
    lo = aggregate_identical(t, "min")
    assert lo.latency_s.tolist() == [2.0, 1.0, 9.0]  # groups in order of first appearance
    assert lo.extra["n_repeats"].tolist() == [2, 2, 1]
    assert aggregate_identical(t, "median").latency_s.tolist() == [2.5, 3.0, 9.0]
    assert aggregate_identical(t, "none") is t
    with pytest.raises(StepTraceError, match="'mean'"):
        aggregate_identical(t, "mean")


def test_recorder(tmp_path: Path) -> None:
    rec = StepRecorder(PROV)
    rec.record(SHAPES[0], 0.01)
    rec.record(_trace().X[1], 0.002)
    with pytest.raises(StepTraceError, match="latency_s"):
        rec.record(SHAPES[0], 0.0)
    assert len(read_steptrace(rec.write(tmp_path / "live.parquet"))) == 2
    assert len(rec.take()) == 2 and len(rec) == 0


def test_provenance_must_be_named() -> None:
    with pytest.raises(StepTraceError, match="'hardware'"):
        Provenance("vllm", "m", "", "1")


def _rewrite_until(path: str, stop: Any) -> None:
    """Rewrite ``path`` with traces of changing length until ``stop`` is set (a child process,
    as the engine core that writes a replica's trace)."""
    base = StepTrace.from_shapes(SHAPES * 400, [0.010, 0.002, 0.004] * 400, PROV)
    i = 0
    while not stop.is_set():
        i += 1
        write_steptrace(base.subset(np.arange(100 + (i * 37) % 1100)), path)


def test_a_trace_rewritten_while_it_is_read_is_read_whole(tmp_path: Path) -> None:
    """A reader sees one whole version of a file another process keeps replacing (given a
    path, pyarrow opened the file twice and paired one version's footer with another's pages:
    the predictor link's reads failed now and then)."""
    path = tmp_path / "steps.parquet"
    write_steptrace(_trace(), path)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    writer = ctx.Process(target=_rewrite_until, args=(str(path), stop))
    writer.start()
    reads, errors = 0, []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                n = len(read_steptrace(path))
                assert n == 3 or 100 <= n < 1200
                reads += 1
            except StepTraceError as e:
                errors.append(str(e))
    finally:
        stop.set()
        writer.join(timeout=30)
    assert reads > 50, reads
    assert not errors, f"{len(errors)} of {reads + len(errors)} reads failed: {errors[0]}"


@pytest.mark.parametrize("distinct", [1, 3, 100])
def test_string_columns_round_trip_however_many_values(tmp_path: Path, distinct: int) -> None:
    """String columns with one, a few (through a dictionary) or many distinct values are
    written row for row; numeric extras keep their values."""
    n = 300
    X = np.tile(_trace().X[:1], (n, 1))
    names = np.array([f"v{i % distinct}" for i in range(n)], dtype=object)
    trace = StepTrace.from_arrays(X, np.full(n, 0.01), PROV,
                                  {"latency_version": names, "num_reqs": np.arange(n)})
    path = write_steptrace(trace, tmp_path / "t.parquet")
    back = read_steptrace(path)
    assert back.extra["latency_version"].tolist() == names.tolist()
    assert back.extra["num_reqs"].tolist() == list(range(n))
    assert back.provenance["hardware"].tolist() == [PROV.hardware] * n


def test_a_string_column_with_missing_values_keeps_them_missing(tmp_path: Path) -> None:
    X = np.tile(_trace().X[:1], (4, 1))
    names = np.array(["v1", None, "v2", "v1"], dtype=object)
    trace = StepTrace.from_arrays(X, np.full(4, 0.01), PROV, {"latency_version": names})
    back = read_steptrace(write_steptrace(trace, tmp_path / "t.parquet"))
    assert back.extra["latency_version"].tolist() == ["v1", None, "v2", "v1"]


def _stamped(n: int) -> StepTrace:
    """``n`` steps, the i-th stamped ``i + 1`` seconds."""
    shapes = [BatchShape(prefill=((1 + i % 300, 0),), decode_ctx=(i % 7,)) for i in range(n)]
    t = StepTrace.from_shapes(shapes, [0.001 + 1e-6 * i for i in range(n)], PROV)
    t.extra["timestamp_s"] = np.arange(1, n + 1, dtype=np.float64)
    return t


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_rows_since_a_time_are_the_newer_rows_of_the_whole_file(tmp_path: Path,
                                                                 suffix: str) -> None:
    n = 2 * PARQUET_ROW_GROUP_ROWS + 500
    path = write_steptrace(_stamped(n), tmp_path / f"steps.{suffix}")
    whole = read_steptrace(path)
    for after in (0.0, 10.0, float(PARQUET_ROW_GROUP_ROWS), n - 3.5):
        got = read_steptrace_since(path, after)
        assert got is not None
        keep = np.flatnonzero(whole.extra["timestamp_s"] > after)
        assert np.array_equal(got.X, whole.X[keep])
        assert np.array_equal(got.latency_s, whole.latency_s[keep])
        assert got.provenance["model"].tolist() == ["tiny@float32"] * len(keep)
    assert read_steptrace_since(path, float(n)) is None
    no_stamps = write_steptrace(_trace(), tmp_path / f"plain.{suffix}")
    assert read_steptrace_since(no_stamps, 0.0) is None
    with pytest.raises(StepTraceError, match="does not exist"):
        read_steptrace_since(tmp_path / f"none.{suffix}", 0.0)


def test_rows_since_a_time_decode_only_the_row_groups_holding_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a tail decodes follows the new rows, not the file: a trace of three row groups
    read after a time in the last group reads that group alone."""
    import pyarrow.parquet as pq

    n = 2 * PARQUET_ROW_GROUP_ROWS + 500
    path = write_steptrace(_stamped(n), tmp_path / "steps.parquet")
    assert pq.ParquetFile(path).num_row_groups == 3
    read: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups

    def spy(self: Any, groups: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(list(groups))
        return real(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    got = read_steptrace_since(path, n - 100.0)
    assert got is not None and len(got) == 100
    assert read == [[2]]
    read_steptrace_since(path, PARQUET_ROW_GROUP_ROWS - 1.0)  # the first group's last row
    assert read[-1] == [0, 1, 2]


def test_the_link_tail_forwards_each_row_once_as_the_trace_is_rewritten(tmp_path: Path) -> None:
    from slidingserve.serve.predictor_link import StepTraceTail

    full = _stamped(3 * PARQUET_ROW_GROUP_ROWS)
    path = tmp_path / "steps.parquet"
    tail = StepTraceTail(path)
    assert tail.new_rows() is None  # no file yet
    seen = []
    for held in (40, 45, 2100, 2100, 4500, 6144):
        write_steptrace(full.subset(np.arange(held)), path)
        rows = tail.new_rows()
        if rows is not None:
            seen.append(rows[1])
    assert tail.new_rows() is None  # unchanged file
    assert np.array_equal(np.concatenate(seen), full.latency_s)
