import pytest

from slidingserve.serve.slo_headers import (
    TIER_HEADER,
    TPOT_HEADER,
    TTFT_HEADER,
    SLOHeaderError,
    parse_slo_headers,
)
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tiers():
    return load_tiers()


def test_no_header_gives_default_tier(tiers):
    slo = parse_slo_headers({}, tiers)
    assert slo.tier == tiers.default.name
    assert slo.ttft_s == tiers.default.ttft_s and slo.tpot_s == tiers.default.tpot_s


def test_tier_header_and_tightening(tiers):
    slo = parse_slo_headers(
        {TIER_HEADER: "interactive", TTFT_HEADER: "2500", TPOT_HEADER: "40"}, tiers
    )
    assert slo.tier == "interactive"
    assert slo.ttft_s == pytest.approx(2.5) and slo.tpot_s == pytest.approx(0.04)
    assert slo.priority == tiers["interactive"].priority
    assert slo.extra_args() == {
        "slo_tier": "interactive",
        "slo_ttft_ms": 2500.0,
        "slo_tpot_ms": 40.0,
    }


@pytest.mark.parametrize(
    ("headers", "header", "needle"),
    [
        ({TIER_HEADER: "gold"}, TIER_HEADER, "unknown SLO tier"),
        ({TIER_HEADER: "interactive", TTFT_HEADER: "soon"}, TTFT_HEADER, "not a number"),
        ({TIER_HEADER: "interactive", TTFT_HEADER: "-5"}, TTFT_HEADER, "positive"),
        ({TIER_HEADER: "interactive", TTFT_HEADER: "nan"}, TTFT_HEADER, "positive"),
        ({TIER_HEADER: "interactive", TTFT_HEADER: "6001"}, TTFT_HEADER, "at most 6000 ms"),
        ({TIER_HEADER: "interactive", TPOT_HEADER: "51"}, TPOT_HEADER, "at most 50 ms"),
    ],
)
def test_bad_headers_name_header_and_value(tiers, headers, header, needle):
    with pytest.raises(SLOHeaderError) as info:
        parse_slo_headers(headers, tiers)
    err = info.value
    assert err.header == header
    assert err.value == headers[header]
    assert needle in str(err) and header in str(err) and repr(headers[header]) in str(err)
