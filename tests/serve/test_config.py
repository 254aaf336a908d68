import pytest

from slidingserve.serve.config import ServeConfigError, load_serve_config


def test_defaults_validate():
    cfg = load_serve_config({})
    assert cfg.engine.model == "tiny" and cfg.num_replicas == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"engine": {"max_num_batched_tokens": -1}}, "engine.max_num_batched_tokens"),
        ({"admission": {"on_reject": "drop"}}, "admission.on_reject"),
        ({"tiers_path": "/nonexistent/tiers.yaml"}, "/nonexistent/tiers.yaml"),
        ({"engine": {"modle": "x"}}, "engine.modle"),
    ],
)
def test_bad_config_names_field(data, needle):
    with pytest.raises(ServeConfigError, match=needle.replace(".", r"\.")):
        load_serve_config(data)


def test_keys_are_not_echoed():
    with pytest.raises(ServeConfigError) as info:
        load_serve_config({"auth": {"keys": {"sekrit": "interactive"}}})
    assert "sekrit" not in str(info.value)
