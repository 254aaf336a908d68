"""Trace loading: the real Azure trace as is, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidingserve.workload import TraceError, load_trace

AZURE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "azure_llm_2023_conv.csv"


@pytest.mark.skipif(not AZURE.is_file(), reason="shared Azure trace not present")
def test_azure_conversation_trace_loads_as_is():
    trace = load_trace(AZURE)
    assert len(trace) > 19_000
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert 3000 < trace.duration_s < 4000  # one hour sample
    assert 5.0 < trace.native_rate < 6.0
    assert 1100 < trace.prompt_len.mean() < 1200  # published mean 1,155
    assert 200 < trace.output_len.mean() < 220  # published mean 211
    assert trace.prompt_len.min() >= 1 and trace.output_len.min() >= 1


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


def test_datetime_with_seven_fractional_digits_and_numeric_seconds(tmp_path):
    p = _write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:50.5000000,10,2\n"
        "2023-11-16 18:15:46.2500000,5,1\n",
    )
    t = load_trace(p)
    assert t.arrival_s.tolist() == [0.0, 4.25]  # sorted, relative to the first
    assert t.prompt_len.tolist() == [5, 10]
    p2 = _write(tmp_path, "GeneratedTokens,TIMESTAMP,ContextTokens,Extra\n3,1.5,7,x\n1,0.5,2,y\n")
    t2 = load_trace(p2)
    assert t2.arrival_s.tolist() == [0.0, 1.0] and t2.output_len.tolist() == [1, 3]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "empty trace file"),
        ("TIMESTAMP,ContextTokens\n1,2\n", "missing column 'GeneratedTokens'"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no rows"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n0,abc,3\n",
            "row 2: column 'ContextTokens'.*'abc'",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n0,4,3\n1,4,0\n",
            "row 3: column 'GeneratedTokens'.*0",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,4,3\n",
            "column 'TIMESTAMP'.*'yesterday'",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n0,4\n", "row 2: expected 3 columns"),
    ],
)
def test_bad_traces_name_file_and_column(tmp_path, text, pattern):
    p = _write(tmp_path, text)
    with pytest.raises(TraceError, match=pattern) as err:
        load_trace(p)
    assert str(p) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.csv: trace file not found"):
        load_trace(tmp_path / "nope.csv")


SHAREGPT = AZURE.parent / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


@pytest.mark.skipif(not SHAREGPT.is_file(), reason="shared ShareGPT trace not present")
def test_sharegpt_lengths_only_trace_loads_as_is():
    trace = load_trace(SHAREGPT)
    assert len(trace) == 30_731 and not trace.has_arrivals
    assert 2330 < trace.prompt_len.mean() < 2350  # published mean 2,340
    assert 430 < trace.output_len.mean() < 450  # published mean 439


def test_lengths_only_format_keeps_file_order_and_cannot_be_replayed(tmp_path):
    from slidingserve.slo import load_tiers
    from slidingserve.workload import WorkloadConfig, build_workload

    p = _write(
        tmp_path,
        "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n74,918,992,0.08\n"
        "290,905,1195,0.32\n",
    )
    t = load_trace(p)
    assert t.prompt_len.tolist() == [74, 290] and t.output_len.tolist() == [918, 905]
    with pytest.raises(TraceError, match="lengths-only trace has no arrival times"):
        _ = t.duration_s
    tiers = load_tiers()
    specs = build_workload(WorkloadConfig(rate=2.0, num_requests=5, seed=1), tiers, trace=t)
    assert {s.prompt_len for s in specs} <= {74, 290}
    with pytest.raises(ValueError, match="no timestamps"):
        build_workload(WorkloadConfig(arrival="replay", trace=p), tiers, trace=t)
    bad = _write(tmp_path, "num_prefill_tokens,num_decode_tokens\n10,x\n")
    with pytest.raises(TraceError, match="row 2: column 'num_decode_tokens'"):
        load_trace(bad)
