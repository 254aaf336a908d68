"""Metrics on hand-computed records."""

from __future__ import annotations

import pytest

from slidingserve.metrics import RequestRecord, summarize, windows, worst_tier_violation_rate
from slidingserve.slo import TierConfigError, load_tiers

TIERS = load_tiers()  # interactive: TTFT 6 s, TPOT 50 ms; standard: e2e 600 s; batch: e2e 1800 s


def rec(arrival, tier, first, last, n, finished=True, **kw):
    return RequestRecord(arrival, tier, first, last, n, finished, **kw)


def test_request_level_attainment_by_hand():
    it = TIERS["interactive"]
    ok = rec(0.0, "interactive", 5.0, 5.0 + 0.05 * 10, 11)  # TTFT 5, TPOT exactly 0.05
    slow_first = rec(0.0, "interactive", 6.5, 7.0, 11)  # TTFT 6.5 > 6
    slow_tpot = rec(0.0, "interactive", 1.0, 1.0 + 0.06 * 10, 11)  # TPOT 0.06 > 0.05
    single = rec(0.0, "interactive", 2.0, 2.0, 1)  # one token: no TPOT to judge
    assert ok.tpot_s == pytest.approx(0.05)
    assert [r.meets_slo(it) for r in (ok, slow_first, slow_tpot, single)] == [
        True,
        False,
        False,
        True,
    ]
    st = TIERS["standard"]
    assert rec(10.0, "standard", 400.0, 609.0, 524).meets_slo(st)  # TPOT < 0.4, e2e 599
    # standard's TPOT target is 0.4 s: 209 s/token misses it even inside the e2e deadline
    assert not rec(10.0, "standard", 400.0, 609.0, 2).meets_slo(st)
    assert not rec(10.0, "standard", 400.0, 611.0, 600).meets_slo(st)  # e2e 601 > 600


def test_summary_by_hand():
    records = [
        # interactive: one on time, one late first token, one never finished
        rec(0.0, "interactive", 1.0, 1.5, 11, token_times=[1.0 + 0.05 * i for i in range(11)]),
        rec(1.0, "interactive", 8.0, 8.5, 11),
        rec(2.0, "interactive", None, None, 0, finished=False, expected_tokens=5),
        # standard: on time, and past its 600 s deadline
        rec(0.0, "standard", 10.0, 20.0, 26),
        rec(0.0, "standard", 10.0, 610.0, 1501),
    ]
    s = summarize(records, TIERS, duration_s=100.0)
    it, st, ba = s["tiers"]["interactive"], s["tiers"]["standard"], s["tiers"]["batch"]
    assert s["format"] == "slidingserve.summary/v1"
    assert (it["requests"], it["finished"], it["unfinished"]) == (3, 2, 1)
    assert it["violations"] == 2 and it["violation_rate"] == pytest.approx(2 / 3)
    assert it["slo_attainment"] == pytest.approx(1 / 3)
    assert it["ttft_s"]["p50"] == pytest.approx(4.0)  # median of TTFT 1 and 7
    assert it["tpot_s"]["mean"] == pytest.approx(0.05)
    assert it["e2e_s"]["p99"] == pytest.approx(1.5 + 0.99 * (7.5 - 1.5))
    assert st["violations"] == 1 and st["slo_attainment"] == 0.5
    assert ba["requests"] == 0 and ba["slo_attainment"] is None and ba["ttft_s"]["p50"] is None
    o = s["overall"]
    assert o["requests"] == 5 and o["violations"] == 3
    assert o["goodput_rps"] == pytest.approx(2 / 100.0)
    assert o["throughput_rps"] == pytest.approx(4 / 100.0)
    assert worst_tier_violation_rate(s) == pytest.approx(2 / 3)


def test_token_level_attainment_and_unfinished_tokens():
    it = TIERS["interactive"]
    # tokens due at 6, 6.05, 6.10; the third is late
    r = rec(0.0, "interactive", 5.0, 6.2, 3, token_times=[5.0, 6.04, 6.2])
    assert r.count_late_tokens(it) == 1
    r2 = rec(0.0, "interactive", 5.0, 6.0, 3, late_tokens=0)
    assert r2.count_late_tokens(it) == 0
    cut = rec(0.0, "interactive", 5.0, 5.5, 2, finished=False, late_tokens=0, expected_tokens=10)
    assert cut.count_late_tokens(it) == 8  # never produced = late
    s = summarize([r, r2, cut], TIERS, duration_s=10.0)["tiers"]["interactive"]
    assert s["token_attainment"] == pytest.approx(1 / 3)
    assert s["token_on_time_rate"] == pytest.approx(1 - 9 / 16)
    none = summarize([rec(0.0, "batch", 1.0, 2.0, 3)], TIERS)["overall"]
    assert none["token_attainment"] is None and none["token_on_time_rate"] is None


def test_e2e_deadline_caps_token_deadlines():
    ba = TIERS["batch"]  # TTFT 1800, TPOT 0.4, e2e 1800: every token due by 1800 s
    r = rec(0.0, "batch", 1700.0, 1801.0, 3, token_times=[1700.0, 1750.0, 1801.0])
    assert r.count_late_tokens(ba) == 1
    assert not r.meets_slo(ba)


def test_default_duration_spans_first_arrival_to_last_event():
    s = summarize([rec(2.0, "batch", 3.0, 12.0, 2), rec(5.0, "batch", 6.0, 7.0, 2)], TIERS)
    assert s["duration_s"] == pytest.approx(10.0)


def test_unknown_tier_in_records_is_named():
    with pytest.raises(TierConfigError, match="'gold'"):
        summarize([rec(0.0, "gold", 1.0, 2.0, 2)], TIERS)


def test_windows_by_hand():
    records = [
        rec(0.0, "interactive", 1.0, 1.5, 11),  # on time
        rec(5.0, "interactive", 12.0, 12.5, 11),  # TTFT 7 > 6: late, still queued at t=10
        rec(12.0, "batch", 30.0, 33.0, 11),  # TPOT 0.3 s, e2e 21 s: on time; queued at t=20
        rec(25.0, "standard", None, None, 0, finished=False),  # never started
    ]
    rows = windows(records, TIERS, 10.0)
    assert [(w["start_s"], w["end_s"], w["requests"]) for w in rows] == [
        (0.0, 10.0, 2),
        (10.0, 20.0, 1),
        (20.0, 30.0, 1),
    ]
    assert [w["queued_at_end"] for w in rows] == [1, 1, 1]
    assert rows[0]["slo_attainment"] == {
        "overall": 0.5, "interactive": 0.5, "standard": None, "batch": None
    }
    assert rows[1]["slo_attainment"]["batch"] == 1.0
    assert rows[2]["slo_attainment"]["overall"] == 0.0
    assert rows[0]["ttft_s"]["p50"] == pytest.approx(4.0)  # TTFTs 1 and 7
    assert rows[2]["ttft_s"]["p50"] is None  # no first token in the window
    assert windows([], TIERS, 10.0) == []
    with pytest.raises(ValueError, match="window length"):
        windows(records, TIERS, 0.0)
    with pytest.raises(ValueError, match="at most"):
        windows(records, TIERS, 0.001)  # 25 s of arrivals: 25,001 windows
