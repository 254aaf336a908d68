"""Tier files: the shipped presets load; bad files fail naming file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidingserve.slo import TierConfigError, load_tiers

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_default_tiers_mirror_the_published_setup():
    t = load_tiers()
    it, st, ba = t["interactive"], t["standard"], t["batch"]
    assert (it.ttft_s, it.tpot_s, it.e2e_s) == (6.0, 0.05, None)
    assert (st.e2e_s, ba.e2e_s) == (600.0, 1800.0)
    assert st.tpot_s == ba.tpot_s == 0.4
    assert t.mix() == pytest.approx({"interactive": 0.2, "standard": 0.5, "batch": 0.3})
    assert [x.priority for x in t.values()] == [0, 1, 2]
    assert "interactive" in t and "gold" not in t


def test_tight_preset_is_tighter():
    base, tight = load_tiers(), load_tiers(DEPLOY / "slo_tiers_tight.yaml")
    for name in base:
        assert tight[name].ttft_s <= base[name].ttft_s
        assert tight[name].tpot_s <= base[name].tpot_s


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tiers.yaml"
    p.write_text(text)
    return p


GOOD = "tiers:\n  - {name: a, ttft_s: 1.0, tpot_s: 0.1}\n"


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("tiers:\n  - {name: a, ttft_s: -1.0, tpot_s: 0.1}\n", "tiers[a].ttft_s", "-1.0"),
        ("tiers:\n  - {name: a, ttft_s: 1.0}\n", "tiers[a].tpot_s", "name"),
        ("tiers:\n  - {name: a, ttft_s: 1.0, tpot_s: 0.1, e2e_s: 0}\n", "tiers[a].e2e_s", "0"),
        ("tiers:\n  - {name: a, ttft_s: 1.0, tpot_s: 0.1, wieght: 2}\n", "tiers[a].wieght", "2"),
        ("tiers:\n  - {name: a, ttft_s: fast, tpot_s: 0.1}\n", "tiers[a].ttft_s", "fast"),
        ("tiers: []\n", "tiers", "[]"),
        (GOOD + "default_tier: b\n", "<root>", "b"),
    ],
)
def test_bad_tier_files_name_file_field_and_value(tmp_path, text, field, value):
    p = _write(tmp_path, text)
    with pytest.raises(TierConfigError) as err:
        load_tiers(p)
    msg = str(err.value)
    assert str(p) in msg
    assert field in msg
    assert value in msg


def test_duplicate_names_missing_file_and_bad_yaml(tmp_path):
    dup = _write(tmp_path, GOOD + "  - {name: a, ttft_s: 2.0, tpot_s: 0.2}\n")
    with pytest.raises(TierConfigError, match="duplicate tier name"):
        load_tiers(dup)
    with pytest.raises(TierConfigError, match=r"missing\.yaml: tier file not found"):
        load_tiers(tmp_path / "missing.yaml")
    bad = _write(tmp_path, "tiers: [\n")
    with pytest.raises(TierConfigError, match="not valid YAML"):
        load_tiers(bad)


def test_unknown_tier_lookup_is_named():
    with pytest.raises(TierConfigError, match="unknown SLO tier 'gold'"):
        load_tiers()["gold"]
