"""Per-request SLO metadata and the adapter's config: pure functions, no engine."""

from __future__ import annotations

import pytest

from slidingserve.engine.config import (
    CONFIG_KEY,
    EngineSchedulerConfig,
    additional_config,
    config_from_additional,
)
from slidingserve.engine.slo import SLOError, slo_extra_args, tier_of
from slidingserve.engine.versions import (
    SUPPORTED_VLLM,
    UnsupportedVllmError,
    installed_vllm,
    require_supported_vllm,
)
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tiers():
    return load_tiers()


def test_tier_by_name_and_default(tiers) -> None:
    assert tier_of({"slo_tier": "interactive"}, tiers) is tiers["interactive"]
    assert tier_of(None, tiers) is tiers.default
    assert tier_of({}, tiers) is tiers.default


def test_explicit_targets_override_the_tier(tiers) -> None:
    t = tier_of(slo_extra_args("batch", ttft_ms=250, tpot_ms=40), tiers)
    assert (t.name, t.ttft_s, t.tpot_s) == ("batch", 0.25, 0.04)
    assert t.priority == tiers["batch"].priority and t.e2e_s == tiers["batch"].e2e_s


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"slo_tier": "platinum"}, "unknown SLO tier 'platinum'"),
        ({"slo_tier": 3}, r"must be a tier name \(got 3\)"),
        ({"slo_tier": "batch", "slo_ttft_ms": -5}, r"'slo_ttft_ms'\] must be > 0 ms \(got -5\)"),
        ({"slo_tier": "batch", "slo_tpot_ms": "fast"}, "'slo_tpot_ms'.*got 'fast'"),
        ({"slo_tier": "batch", "slo_tpot_ms": float("nan")}, "finite number"),
    ],
)
def test_bad_metadata_is_named(tiers, extra, needle) -> None:
    with pytest.raises(SLOError, match=needle):
        tier_of(extra, tiers)


def test_config_round_trips_through_additional_config() -> None:
    add = additional_config(policy="qoserve", latency_check_every=4, step_trace="/tmp/s.csv")
    cfg = config_from_additional(add)
    assert cfg.policy == "qoserve" and cfg.latency_check_every == 4
    assert config_from_additional(None) == EngineSchedulerConfig()
    assert config_from_additional({"other": 1}).policy == "slidingserve"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"latency_check_every": 0}, r"slidingserve\.latency_check_every.*got 0"),
        ({"polcy": "x"}, r"slidingserve\.polcy: Extra inputs"),
        ({"policy_config": {"chunker": {"window": 3}}}, r"chunker\.window.*got 3"),
        ({"policy": "sliding"}, r"unknown policy 'sliding'"),
    ],
)
def test_bad_config_names_field_and_value(raw, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        config_from_additional({CONFIG_KEY: raw})
    with pytest.raises(ValueError, match="must be a mapping"):
        config_from_additional({CONFIG_KEY: "slidingserve"})


def test_inline_tiers_win(tiers) -> None:
    data = {"tiers": [{"name": "gold", "ttft_s": 1.0, "tpot_s": 0.1}]}
    cfg = EngineSchedulerConfig(tiers=data)
    assert list(cfg.load_tiers()) == ["gold"]
    assert list(EngineSchedulerConfig().load_tiers()) == list(tiers)


def test_installed_vllm_is_a_supported_version() -> None:
    try:
        installed_vllm()  # reads package metadata, imports nothing
    except UnsupportedVllmError as exc:
        pytest.skip(str(exc))  # no vLLM at all; an unsupported version fails below
    dist, version = require_supported_vllm()
    assert version in SUPPORTED_VLLM[dist]
