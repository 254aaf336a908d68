"""Step-trace format: one row per engine step, the batch's features and its measured latency.

Columns (order not significant on read; written in this order):

  <FEATURE_NAMES of slidingserve.latency.features, schema v1>   float64, >= 0
  latency_s        float64, > 0   wall time of the step (schedule -> model output)
  engine           str            e.g. "vllm-cpu", "vllm", "torch"
  model            str            model name or path it was measured on
  hardware         str            e.g. "cpu-2core", "H100-SXM"
  version          str            engine version, e.g. "0.32.0"
  schema_version   int            STEPTRACE_SCHEMA_VERSION (pins the feature schema below)

Extra columns (e.g. ``timestamp_s``, ``source``) are kept on read and written back unchanged,
but never used for training. Parquet (pyarrow) and CSV are both accepted; the format is chosen
by file suffix (``.parquet``/``.pq`` or ``.csv``). Writes are atomic (temp file + rename).

Validation (``StepTrace.validate``) refuses, naming the column and the first bad row: missing
columns, a different ``schema_version``, non-finite or negative features, non-positive latency,
and rows whose ``total_tokens`` is not ``prefill_tokens + decode_reqs`` (a sign of columns
written in the wrong order).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slidingserve.latency.features import (
    F_DECODE_REQS,
    F_PREFILL_TOKENS,
    F_TOTAL_TOKENS,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    N_FEATURES,
    BatchShape,
    features_of,
)

STEPTRACE_SCHEMA_VERSION = 1
# Step-trace schema version -> the feature schema version its feature columns follow.
FEATURE_SCHEMA_OF_TRACE = {1: 1}
assert FEATURE_SCHEMA_OF_TRACE[STEPTRACE_SCHEMA_VERSION] == FEATURE_SCHEMA_VERSION

LATENCY_COLUMN = "latency_s"
PROVENANCE_COLUMNS: tuple[str, ...] = ("engine", "model", "hardware", "version")
SCHEMA_COLUMN = "schema_version"
REQUIRED_COLUMNS: tuple[str, ...] = (
    *FEATURE_NAMES,
    LATENCY_COLUMN,
    *PROVENANCE_COLUMNS,
    SCHEMA_COLUMN,
)
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_ROW_GROUP_ROWS = 2048  # rows per Parquet row group (a tail reads whole groups)
TIMESTAMP_COLUMN = "timestamp_s"  # optional extra column: wall time of the step
CSV_SUFFIXES = (".csv",)


class StepTraceError(ValueError):
    """A step trace is missing columns, has bad values, or a different schema version."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a step was measured."""

    engine: str
    model: str
    hardware: str
    version: str

    def __post_init__(self) -> None:
        for name in PROVENANCE_COLUMNS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise StepTraceError(
                    f"provenance field {name!r} must be a non-empty string, got {value!r}"
                )


def _string_array(values: np.ndarray) -> pa.Array:
    """A string column, built through a dictionary of its distinct values rather than one
    Python string per row: its values repeat (provenance, the policy, the model version), and
    per-row strings would be most of the cost of writing a long trace. A column with missing
    (non-string) values is converted as it is, missing values as nulls."""
    values = np.asarray(values)
    if not len(values):
        return pa.array([], type=pa.string())
    first = values[0]
    if isinstance(first, str) and bool(np.all(values == first)):  # one value: no sort
        distinct, codes = np.array([first]), np.zeros(len(values), dtype=np.intp)
    elif not all(isinstance(v, str) for v in values):
        return pa.array(values.tolist())
    else:
        distinct, codes = np.unique(values.astype(str), return_inverse=True)
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(distinct.tolist(), type=pa.string())
    ).cast(pa.string())


@dataclass(frozen=True)
class StepTrace:
    """An in-memory step trace: features X (n, F), latencies y (n,), provenance per row."""

    X: np.ndarray
    latency_s: np.ndarray
    provenance: dict[str, np.ndarray]  # column name -> (n,) array of str
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.latency_s.shape[0])

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        X: np.ndarray,
        latency_s: Sequence[float] | np.ndarray,
        provenance: Provenance,
        extra: Mapping[str, Sequence[object] | np.ndarray] | None = None,
    ) -> StepTrace:
        X = (
            np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
            if len(X)
            else np.zeros((0, N_FEATURES))
        )
        y = np.asarray(latency_s, dtype=np.float64)
        n = len(y)
        prov = {
            name: np.full(n, getattr(provenance, name), dtype=object) for name in PROVENANCE_COLUMNS
        }
        ext = {k: np.asarray(v) for k, v in (extra or {}).items()}
        trace = cls(X=X, latency_s=y, provenance=prov, extra=ext)
        trace.validate()
        return trace

    @classmethod
    def from_shapes(
        cls,
        shapes: Sequence[BatchShape],
        latency_s: Sequence[float] | np.ndarray,
        provenance: Provenance,
    ) -> StepTrace:
        X = np.array([features_of(s) for s in shapes], dtype=np.float64).reshape(-1, N_FEATURES)
        return cls.from_arrays(X, latency_s, provenance)

    @classmethod
    def concat(cls, traces: Iterable[StepTrace]) -> StepTrace:
        traces = list(traces)
        if not traces:
            raise StepTraceError("cannot concatenate an empty list of step traces")
        extra_keys = set.intersection(*(set(t.extra) for t in traces))
        return cls(
            X=np.concatenate([t.X for t in traces]),
            latency_s=np.concatenate([t.latency_s for t in traces]),
            provenance={
                c: np.concatenate([t.provenance[c] for t in traces]) for c in PROVENANCE_COLUMNS
            },
            extra={k: np.concatenate([t.extra[k] for t in traces]) for k in sorted(extra_keys)},
        )

    def subset(self, idx: np.ndarray) -> StepTrace:
        return StepTrace(
            X=self.X[idx],
            latency_s=self.latency_s[idx],
            provenance={k: v[idx] for k, v in self.provenance.items()},
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    # ---- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        n = len(self.latency_s)
        if self.X.ndim != 2 or self.X.shape != (n, N_FEATURES):
            raise StepTraceError(
                f"features must have shape ({n}, {N_FEATURES}), got {self.X.shape}"
            )
        for j, name in enumerate(FEATURE_NAMES):
            col = self.X[:, j]
            bad = np.flatnonzero(~np.isfinite(col) | (col < 0))
            if bad.size:
                raise StepTraceError(
                    f"column {name!r}: row {int(bad[0])} has value {col[bad[0]]!r} "
                    "(features must be finite and >= 0)"
                )
        bad = np.flatnonzero(~np.isfinite(self.latency_s) | (self.latency_s <= 0))
        if bad.size:
            raise StepTraceError(
                f"column {LATENCY_COLUMN!r}: row {int(bad[0])} has value "
                f"{self.latency_s[bad[0]]!r} (latencies must be finite and > 0 seconds)"
            )
        expected = self.X[:, F_PREFILL_TOKENS] + self.X[:, F_DECODE_REQS]
        bad = np.flatnonzero(np.abs(self.X[:, F_TOTAL_TOKENS] - expected) > 1e-6)
        if bad.size:
            r = int(bad[0])
            raise StepTraceError(
                f"column 'total_tokens': row {r} has {self.X[r, F_TOTAL_TOKENS]!r} but "
                f"prefill_tokens + decode_reqs = {expected[r]!r} (feature columns out of order?)"
            )
        for name in PROVENANCE_COLUMNS:
            prov = self.provenance.get(name)
            if prov is None or len(prov) != n:
                raise StepTraceError(f"provenance column {name!r} missing or of the wrong length")

    def data_hash(self) -> str:
        """SHA-256 of the features and latencies (provenance excluded): identifies training data."""
        h = hashlib.sha256()
        h.update(f"steptrace-v{STEPTRACE_SCHEMA_VERSION};n={len(self)};".encode())
        h.update(np.ascontiguousarray(self.X, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.latency_s, dtype="<f8").tobytes())
        return h.hexdigest()

    # ---- arrow --------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        cols: dict[str, pa.Array] = {
            name: pa.array(self.X[:, j]) for j, name in enumerate(FEATURE_NAMES)
        }
        cols[LATENCY_COLUMN] = pa.array(self.latency_s)
        for name in PROVENANCE_COLUMNS:
            cols[name] = _string_array(self.provenance[name])
        cols[SCHEMA_COLUMN] = pa.array(np.full(len(self), STEPTRACE_SCHEMA_VERSION, dtype=np.int64))
        for name, values in self.extra.items():
            kind = values.dtype.kind
            cols[name] = pa.array(values) if kind in "biuf" else \
                _string_array(values) if kind in "OU" and len(values) else pa.array(values.tolist())
        return pa.table(cols)

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "<table>") -> StepTrace:
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise StepTraceError(
                f"{source}: missing step-trace column(s) {missing}; required columns are "
                f"{list(REQUIRED_COLUMNS)}"
            )
        versions = set(
            np.asarray(table.column(SCHEMA_COLUMN).to_numpy(zero_copy_only=False)).tolist()
        )
        if versions - {STEPTRACE_SCHEMA_VERSION}:
            raise StepTraceError(
                f"{source}: column {SCHEMA_COLUMN!r} has version(s) {sorted(versions)}, "
                f"this reader understands only {STEPTRACE_SCHEMA_VERSION}"
            )
        try:
            X = (
                np.column_stack(
                    [
                        np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
                        for c in FEATURE_NAMES
                    ]
                )
                if table.num_rows
                else np.zeros((0, N_FEATURES))
            )
            y = np.asarray(
                table.column(LATENCY_COLUMN).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        except (TypeError, ValueError) as e:
            raise StepTraceError(f"{source}: non-numeric feature or latency column: {e}") from e
        prov = {
            c: np.asarray([str(v) for v in table.column(c).to_pylist()], dtype=object)
            for c in PROVENANCE_COLUMNS
        }
        extra = {
            c: np.asarray(table.column(c).to_pylist())
            for c in table.column_names
            if c not in REQUIRED_COLUMNS
        }
        trace = cls(X=X, latency_s=y, provenance=prov, extra=extra)
        try:
            trace.validate()
        except StepTraceError as e:
            raise StepTraceError(f"{source}: {e}") from e
        return trace


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise StepTraceError(
        f"step-trace path {str(path)!r}: unknown suffix {suffix!r}; use one of "
        f"{list(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
    )


def read_steptrace(path: str | os.PathLike[str]) -> StepTrace:
    """Read and validate a step trace (one file, or a directory of .parquet/.csv files)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(
            f for f in p.iterdir() if f.suffix.lower() in PARQUET_SUFFIXES + CSV_SUFFIXES
        )
        if not files:
            raise StepTraceError(f"step-trace directory {str(p)!r} holds no .parquet or .csv files")
        return StepTrace.concat(read_steptrace(f) for f in files)
    if not p.exists():
        raise StepTraceError(f"step-trace path {str(p)!r} does not exist")
    fmt = _format_of(p)
    try:
        if fmt == "parquet":
            # one read of the whole file: given a path, pyarrow opens it once for the footer and
            # again for the pages, and a writer's atomic replace in between pairs one file's
            # footer with the other's pages ("Page was smaller than expected")
            table = pq.read_table(pa.BufferReader(p.read_bytes()))
        else:
            convert = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in PROVENANCE_COLUMNS}
            )
            table = pacsv.read_csv(p, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as e:
        raise StepTraceError(f"step-trace file {str(p)!r} is unreadable as {fmt}: {e}") from e
    return StepTrace.from_table(table, source=str(p))


def read_steptrace_since(path: str | os.PathLike[str], after_s: float) -> StepTrace | None:
    """The rows of the step-trace file ``path`` whose ``timestamp_s`` is after ``after_s``
    (None when there are none, or the file has no timestamps).

    For a tail that follows a trace rewritten as it grows: of a Parquet file only the row groups
    holding a newer row are decoded (by the groups' statistics; ``write_steptrace`` writes
    groups of ``PARQUET_ROW_GROUP_ROWS`` rows, oldest first), so what a read decodes, and the
    memory it leaves with the allocator, follows the new rows, not the window the file holds."""
    p = Path(path)
    if not p.exists():
        raise StepTraceError(f"step-trace path {str(p)!r} does not exist")
    if _format_of(p) != "parquet":
        trace = read_steptrace(p)
    else:
        try:
            # one read of the bytes (see read_steptrace), then only the row groups needed
            f = pq.ParquetFile(pa.BufferReader(p.read_bytes()))
            names = f.schema_arrow.names
            if TIMESTAMP_COLUMN not in names:
                return None
            col = names.index(TIMESTAMP_COLUMN)
            groups = [g for g in range(f.num_row_groups) if _newest(f, g, col) > after_s]
            if not groups:
                return None
            table = f.read_row_groups(groups)
        except (pa.ArrowInvalid, OSError) as e:
            raise StepTraceError(f"step-trace file {str(p)!r} is unreadable as parquet: {e}") from e
        trace = StepTrace.from_table(table, source=str(p))
    ts = trace.extra.get(TIMESTAMP_COLUMN)
    if ts is None:
        return None
    keep = np.flatnonzero(np.asarray(ts, dtype=np.float64) > after_s)
    return trace.subset(keep) if keep.size else None


def _newest(f: pq.ParquetFile, group: int, column: int) -> float:
    """The largest value of ``column`` in row group ``group`` (inf when not recorded)."""
    stats = f.metadata.row_group(group).column(column).statistics
    if stats is None or not stats.has_min_max:
        return float("inf")
    return float(stats.max)


def write_steptrace(trace: StepTrace, path: str | os.PathLike[str]) -> Path:
    """Validate and write a step trace atomically; the format follows the suffix."""
    p = Path(path)
    fmt = _format_of(p)
    trace.validate()
    table = trace.to_table()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp, row_group_size=PARQUET_ROW_GROUP_ROWS)
        else:
            pacsv.write_csv(table, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


class StepRecorder:
    """Accumulates live step samples (one ``record`` per engine step) into a step trace.

    Engine adapters call ``record(shape_or_features, latency_s)`` per step and ``write(path)``
    (atomic) or ``take()`` (hand the rows to a publisher and start afresh) now and then.
    """

    def __init__(self, provenance: Provenance):
        self.provenance = provenance
        self._rows: list[np.ndarray] = []
        self._lat: list[float] = []

    def __len__(self) -> int:
        return len(self._lat)

    def record(self, batch: BatchShape | np.ndarray, latency_s: float) -> None:
        x = (
            features_of(batch)
            if isinstance(batch, BatchShape)
            else np.asarray(batch, dtype=np.float64)
        )
        if x.shape != (N_FEATURES,):
            raise StepTraceError(
                f"a step's features must have shape ({N_FEATURES},), got {x.shape}"
            )
        if not (latency_s > 0 and np.isfinite(latency_s)):
            raise StepTraceError(f"a step's latency_s must be finite and > 0, got {latency_s!r}")
        self._rows.append(x)
        self._lat.append(float(latency_s))

    def to_trace(self) -> StepTrace:
        X = np.array(self._rows, dtype=np.float64).reshape(-1, N_FEATURES)
        return StepTrace.from_arrays(X, self._lat, self.provenance)

    def take(self) -> StepTrace:
        trace = self.to_trace()
        self._rows, self._lat = [], []
        return trace

    def write(self, path: str | os.PathLike[str]) -> Path:
        return write_steptrace(self.to_trace(), path)


AGGREGATIONS = ("none", "min", "median")


def aggregate_identical(trace: StepTrace, how: str = "min") -> StepTrace:
    """One row per distinct feature vector, its latency the ``min`` or ``median`` of the rows.

    Profiles measure every step shape several times (``predictor.profile --repeats``); on a shared
    machine other tenants only ever add time, so the fastest repeat estimates the uncontended
    latency. Provenance is taken from each group's first row; extra columns are dropped, except
    that ``n_repeats`` (rows in the group) is added. ``how="none"`` returns the trace unchanged.
    """
    if how not in AGGREGATIONS:
        raise StepTraceError(f"aggregation must be one of {list(AGGREGATIONS)} (got {how!r})")
    if how == "none" or len(trace) == 0:
        return trace
    _, first, inverse, counts = np.unique(
        trace.X, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    groups = np.split(trace.latency_s[order], bounds)
    reduce = np.min if how == "min" else np.median
    y = np.array([reduce(g) for g in groups], dtype=np.float64)
    keep = np.sort(first)  # keep the original order of first appearance
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    y_in_order = np.empty_like(y)
    y_in_order[rank] = y
    n_in_order = np.empty_like(counts)
    n_in_order[rank] = counts
    return StepTrace(
        X=trace.X[keep],
        latency_s=y_in_order,
        provenance={k: v[keep] for k, v in trace.provenance.items()},
        extra={"n_repeats": n_in_order},
    )
