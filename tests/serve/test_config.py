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
        ({"placement": {"engine_resources": {"CPU": 1}}}, "placement.engine_resources"),
        ({"placement": {"ingress_resources": {"head": 0}}}, "placement.ingress_resources"),
        ({"placement": {"max_engine_replicas_per_node": 0}},
         "placement.max_engine_replicas_per_node"),
        # the scheduler's settings are checked here, not in the engine's process at start-up
        ({"engine": {"policy_config": {"chunker": {"max_step_s": 0}}}}, "chunker.max_step_s"),
        ({"engine": {"policy_config": {"chunkr": {}}}}, "chunkr"),
        ({"engine": {"policy": "slidingserv"}}, "slidingserv"),
    ],
)
def test_bad_config_names_field(data, needle):
    with pytest.raises(ServeConfigError, match=needle.replace(".", r"\.")):
        load_serve_config(data)


def test_keys_are_not_echoed():
    with pytest.raises(ServeConfigError) as info:
        load_serve_config({"auth": {"keys": {"sekrit": "interactive"}}})
    assert "sekrit" not in str(info.value)


def test_placement_reaches_the_deployments():
    from slidingserve.serve.app import build_app

    cfg = load_serve_config({"num_replicas": 2, "placement": {
        "engine_resources": {"engine": 1}, "ingress_resources": {"head": 0.01},
        "max_engine_replicas_per_node": 1}})
    ingress = build_app(cfg)._bound_deployment
    engine = ingress.init_args[0]._bound_deployment
    assert ingress.ray_actor_options == {"num_cpus": 0, "resources": {"head": 0.01}}
    assert engine.ray_actor_options["resources"] == {"engine": 1}
    assert engine._replica_config.max_replicas_per_node == 1
    default = build_app(load_serve_config({}))._bound_deployment.init_args[0]._bound_deployment
    assert "resources" not in default.ray_actor_options
    assert default._replica_config.max_replicas_per_node is None


def test_engine_processes_get_a_bounded_onednn_primitive_cache():
    from slidingserve.serve.config import load_serve_config
    from slidingserve.serve.engine_host import engine_env

    engine = load_serve_config({}).engine
    assert engine_env(engine, {})["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in engine_env(
        engine, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"})  # set: kept
    off = load_serve_config({"engine": {"onednn_primitive_cache": None,
                                        "cpu_threads_bind": None}}).engine
    assert engine_env(off, {}) == {}


def test_cpu_engine_threads_are_not_bound_to_one_core_set_by_default():
    """vLLM's "auto" binding puts every replica on a host on the same cores."""
    from slidingserve.serve.engine_host import engine_env

    engine = load_serve_config({}).engine
    assert engine_env(engine, {})["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(
        engine, {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})  # the deployment's own binding wins
    auto = load_serve_config({"engine": {"cpu_threads_bind": "auto"}}).engine
    assert engine_env(auto, {})["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    with pytest.raises(ServeConfigError, match=r"engine\.cpu_threads_bind"):
        load_serve_config({"engine": {"cpu_threads_bind": ""}})


def test_a_primitive_cache_of_zero_is_refused():
    with pytest.raises(ServeConfigError, match=r"engine\.onednn_primitive_cache"):
        load_serve_config({"engine": {"onednn_primitive_cache": 0}})
