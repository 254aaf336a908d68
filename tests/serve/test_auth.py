import pytest

from slidingserve.serve.auth import AuthError, KeyTable
from slidingserve.serve.config import AuthConfig, ServeConfigError
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tiers():
    return load_tiers()


def test_open_table_allows_everything(tiers):
    table = KeyTable({}, tiers)
    assert table.open and "every SLO tier is open" in table.describe()
    table.check(None, "interactive")


def test_keys_bind_tiers(tiers):
    table = KeyTable({"k-batch": ["batch"], "k-all": ["*"]}, tiers)
    table.check("Bearer k-batch", "batch")
    table.check("Bearer k-all", "interactive")
    with pytest.raises(AuthError) as info:
        table.check("Bearer k-batch", "interactive")
    assert info.value.status == 403 and "interactive" in info.value.message
    assert "k-batch" not in info.value.message
    for bad in (None, "k-batch", "Bearer nope"):
        with pytest.raises(AuthError) as info:
            table.check(bad, "batch")
        assert info.value.status == 401


def test_unknown_tier_in_key_table_is_refused(tiers):
    with pytest.raises(ValueError, match="unknown tier"):
        KeyTable({"k": ["gold"]}, tiers)


def test_keys_from_env(monkeypatch):
    monkeypatch.setenv("SS_TEST_KEYS", "alpha=interactive|standard, beta=*")
    keys = AuthConfig(keys_env="SS_TEST_KEYS").resolved_keys()
    assert keys == {"alpha": ("interactive", "standard"), "beta": ("*",)}
    monkeypatch.setenv("SS_TEST_KEYS", "secretwithoutequals")
    with pytest.raises(ServeConfigError) as info:
        AuthConfig(keys_env="SS_TEST_KEYS").resolved_keys()
    assert "secretwithoutequals" not in str(info.value)
