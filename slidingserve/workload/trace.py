"""Trace CSV loading: two formats, each read as is.

* The Azure LLM inference trace format: ``TIMESTAMP`` (arrival; a datetime such as
  ``2023-11-16 18:15:46.6805900`` or a number of seconds), ``ContextTokens`` (prompt length),
  ``GeneratedTokens`` (output length).
* The lengths-only format of the Sarathi-Serve / Vidur / QoServe projects (e.g. the ShareGPT
  trace of QoServe's capacity experiment): ``num_prefill_tokens`` (prompt length),
  ``num_decode_tokens`` (output length), no timestamps. Such a trace gives lengths for generated
  arrivals (Poisson, Gamma); it cannot be replayed.

Extra columns are ignored. Errors name the file, the column and, where one row is at fault, the
row and value.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

TIME_COLUMN = "TIMESTAMP"
PROMPT_COLUMN = "ContextTokens"
OUTPUT_COLUMN = "GeneratedTokens"
REQUIRED_COLUMNS = (TIME_COLUMN, PROMPT_COLUMN, OUTPUT_COLUMN)
LENGTHS_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")  # lengths-only format


class TraceError(ValueError):
    """A trace file cannot be used; the message names the file and the column."""


@dataclass(frozen=True)
class Trace:
    """A loaded trace: arrival offsets (s, from the first request, sorted) and lengths.

    A lengths-only trace has no arrivals: ``arrival_s`` is None and rows keep the file's order.
    """

    source: str
    arrival_s: np.ndarray | None  # float64, non-decreasing, starts at 0; None: lengths only
    prompt_len: np.ndarray  # int64, >= 1
    output_len: np.ndarray  # int64, >= 1

    def __len__(self) -> int:
        return len(self.prompt_len)

    @property
    def has_arrivals(self) -> bool:
        return self.arrival_s is not None

    @property
    def duration_s(self) -> float:
        if self.arrival_s is None:
            raise TraceError(f"{self.source}: a lengths-only trace has no arrival times")
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @property
    def native_rate(self) -> float:
        """Mean arrival rate of the trace (requests/s)."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else float("nan")


def load_trace(path: str | Path) -> Trace:
    """Load a trace CSV (Azure or lengths-only format, told by the header); Azure rows are
    sorted by arrival time."""
    p = Path(path)
    try:
        handle = p.open(newline="")
    except FileNotFoundError:
        raise TraceError(f"{p}: trace file not found") from None
    except OSError as exc:
        raise TraceError(f"{p}: cannot read trace file: {exc}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(
                f"{p}: empty trace file (expected columns {', '.join(REQUIRED_COLUMNS)})"
            )
        header = [h.strip() for h in header]
        if TIME_COLUMN not in header and all(c in header for c in LENGTHS_COLUMNS):
            return _read_lengths_only(p, header, reader)
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise TraceError(
                f"{p}: missing column {missing[0]!r} (header: {', '.join(header)}; "
                f"expected {', '.join(REQUIRED_COLUMNS)}, or {', '.join(LENGTHS_COLUMNS)} "
                "for a lengths-only trace)"
            )
        it, ip, io = (header.index(c) for c in REQUIRED_COLUMNS)
        times: list[float] = []
        prompts: list[int] = []
        outputs: list[int] = []
        for line, row in _rows(p, header, reader):
            times.append(_parse_time(p, line, row[it]))
            prompts.append(_parse_tokens(p, line, PROMPT_COLUMN, row[ip]))
            outputs.append(_parse_tokens(p, line, OUTPUT_COLUMN, row[io]))
    if not times:
        raise TraceError(f"{p}: trace has a header but no rows")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    return Trace(
        source=str(p),
        arrival_s=t,
        prompt_len=np.asarray(prompts, dtype=np.int64)[order],
        output_len=np.asarray(outputs, dtype=np.int64)[order],
    )


def _rows(
    p: Path, header: list[str], reader: Iterator[list[str]]
) -> Iterator[tuple[int, list[str]]]:
    """(file line, cells) of every non-blank row; a short row is an error naming its line."""
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise TraceError(f"{p}: row {line}: expected {len(header)} columns, got {len(row)}")
        yield line, row


def _read_lengths_only(p: Path, header: list[str], reader: Iterator[list[str]]) -> Trace:
    ip, io = (header.index(c) for c in LENGTHS_COLUMNS)
    prompts: list[int] = []
    outputs: list[int] = []
    for line, row in _rows(p, header, reader):
        prompts.append(_parse_tokens(p, line, LENGTHS_COLUMNS[0], row[ip]))
        outputs.append(_parse_tokens(p, line, LENGTHS_COLUMNS[1], row[io]))
    if not prompts:
        raise TraceError(f"{p}: trace has a header but no rows")
    return Trace(
        source=str(p),
        arrival_s=None,
        prompt_len=np.asarray(prompts, dtype=np.int64),
        output_len=np.asarray(outputs, dtype=np.int64),
    )


def _parse_time(path: Path, line: int, cell: str) -> float:
    text = cell.strip()
    try:
        return float(text)
    except ValueError:
        pass
    # Azure traces carry 7 fractional digits; datetime takes at most 6.
    head, dot, frac = text.partition(".")
    try:
        stamp = datetime.fromisoformat(head)
    except ValueError:
        raise TraceError(
            f"{path}: row {line}: column {TIME_COLUMN!r}: not a timestamp or number of seconds "
            f"(got {cell!r})"
        ) from None
    seconds = stamp.timestamp()
    if dot:
        if not frac.isdigit():
            raise TraceError(
                f"{path}: row {line}: column {TIME_COLUMN!r}: bad fractional seconds (got {cell!r})"
            )
        seconds += int(frac) / 10 ** len(frac)
    return seconds


def _parse_tokens(path: Path, line: int, column: str, cell: str) -> int:
    try:
        value = int(cell.strip())
    except ValueError:
        raise TraceError(
            f"{path}: row {line}: column {column!r}: not an integer token count (got {cell!r})"
        ) from None
    if value < 1:
        raise TraceError(f"{path}: row {line}: column {column!r}: must be >= 1 (got {value})")
    return value
