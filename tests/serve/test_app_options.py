"""What ``build_app`` asks Ray Serve for: replicas, resources, the cold-start latency model.

Binding an application needs no running cluster; the options are read back from the bound
Engine deployment, after Ray Serve's own validation accepted them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slidingserve.serve.app import build
from slidingserve.serve.config import ServeConfigError, load_serve_config
from slidingserve.serve.engine_host import ReplicaFiles, replica_hardware, scheduler_kwargs


def engine_deployment(args: dict[str, Any]) -> Any:
    ingress = build(args)._bound_deployment
    (engine_app,) = [a for a in ingress.init_args if hasattr(a, "_bound_deployment")]
    return engine_app._bound_deployment


def test_fixed_replicas_on_one_gpu_each() -> None:
    dep = engine_deployment({"num_replicas": 3, "engine_num_gpus": 1, "engine_num_cpus": 8})
    assert dep.num_replicas == 3 and dep._deployment_config.autoscaling_config is None
    assert dep.ray_actor_options == {"num_cpus": 8.0, "num_gpus": 1.0}
    assert dep._replica_config.placement_group_bundles is None


def test_autoscaling_config_reaches_the_engine_deployment() -> None:
    auto = {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 96,
            "upscale_delay_s": 15}
    dep = engine_deployment({"autoscaling_config": auto})
    got = dep._deployment_config.autoscaling_config
    assert (got.min_replicas, got.max_replicas, got.target_ongoing_requests,
            got.upscale_delay_s) == (2, 6, 96, 15)


def test_tensor_parallel_replica_reserves_a_placement_group_of_its_gpus() -> None:
    dep = engine_deployment({"engine": {"tensor_parallel_size": 4}, "engine_num_gpus": 4,
                             "engine_num_cpus": 6})
    cfg = dep._replica_config
    assert cfg.placement_group_bundles == [{"CPU": 6.0, "GPU": 1.0}] + [{"GPU": 1.0}] * 3
    assert cfg.placement_group_strategy == "STRICT_PACK"
    # the replica actor runs in the first bundle on its CPUs; vLLM's workers take the GPUs
    assert dep.ray_actor_options == {"num_cpus": 6.0}
    spread = engine_deployment({"engine": {"tensor_parallel_size": 2}, "engine_num_gpus": 2,
                                "engine_placement_strategy": "SPREAD"})
    assert spread._replica_config.placement_group_strategy == "SPREAD"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"engine": {"tensor_parallel_size": 2}, "engine_num_gpus": 1},
         r"engine_num_gpus=1 per replica does not cover engine.tensor_parallel_size=2"),
        ({"engine": {"tensor_parallel_size": 2}},  # the default is a CPU replica: 0 GPUs
         "engine_num_gpus=0 per replica does not cover"),
        ({"engine": {"tensor_parallel_size": 2}, "engine_num_gpus": 3}, "reserved and idle"),
        ({"autoscaling_config": {"min_replicas": 4, "max_replicas": 2}},
         r"field autoscaling_config: max_replicas \(2\) must be greater than or equal to "
         r"min_replicas \(4\)"),
        ({"autoscaling_config": {"max_replicas": 0}}, r"autoscaling_config: max_replicas"),
        ({"autoscaling_config": {"max_replica": 4}}, r"unknown field\(s\) \['max_replica'\]"),
        ({"autoscaling_config": {"max_replicas": 4}, "num_replicas": 2},
         "num_replicas=2 and autoscaling_config are both set"),
        ({"engine": {"roofline": {"mfu": 1.5}}}, "field engine.roofline.mfu"),
        ({"engine": {"roofline": {"peak_flop": 1e15}}}, "field engine.roofline.peak_flop"),
        ({"engine_placement_strategy": "PACKED"}, "field engine_placement_strategy"),
        ({"engine": {"cold_start_model": "/no/such/model"}},
         r"latency model '/no/such/model': no predictor model"),
    ],
)
def test_bad_scaling_and_latency_config_is_refused_naming_the_field(args, needle) -> None:
    with pytest.raises(ServeConfigError, match=needle):
        load_serve_config(args)


def test_cross_field_error_never_echoes_api_keys() -> None:
    with pytest.raises(ServeConfigError) as info:
        load_serve_config({"autoscaling_config": {"max_replicas": 4}, "num_replicas": 2,
                           "auth": {"keys": {"sekrit-key": ["*"]}}})
    assert "sekrit" not in str(info.value)


def test_configured_roofline_is_the_replicas_cold_start_model(tmp_path: Path) -> None:
    from slidingserve.engine.latency_source import load_model_dir
    from slidingserve.latency.roofline import RooflineConfig

    roof = {"num_params": 70e9, "num_layers": 80, "peak_flops": 2e15, "hbm_bytes_per_s": 4.8e12,
            "mfu": 0.5, "overhead_s": 0.006}
    cfg = load_serve_config({"engine": {"roofline": roof, "hardware": "H200 x2"}})
    files = ReplicaFiles(tmp_path / "replica")
    extra = scheduler_kwargs(cfg, files)["additional_config"]["slidingserve"]
    model, version = load_model_dir(files.latency_model)
    assert model.config == RooflineConfig(**roof) and version == "roofline-cold-start"  # type: ignore[attr-defined]
    assert json.loads((files.latency_model / "roofline.json").read_text())["num_params"] == 70e9
    assert extra["roofline"]["num_layers"] == 80 and extra["hardware"] == "H200 x2"
    # a config changed between restarts applies (a published predictor model is kept)
    cfg2 = load_serve_config({"engine": {"roofline": {**roof, "overhead_s": 0.01}}})
    scheduler_kwargs(cfg2, files)
    assert load_model_dir(files.latency_model)[0].config.overhead_s == 0.01  # type: ignore[attr-defined]


def test_replica_hardware_names_tensor_parallel_gpus() -> None:
    cfg = load_serve_config({"engine": {"tensor_parallel_size": 2}, "engine_num_gpus": 2})
    assert replica_hardware(cfg.engine).endswith(" x2")
    named = load_serve_config({"engine": {"hardware": "my-gpu"}})
    assert replica_hardware(named.engine) == "my-gpu"


def test_placement_resources_reach_the_replica_or_its_first_bundle() -> None:
    place = {"engine_resources": {"engine": 1}, "max_engine_replicas_per_node": 1}
    dep = engine_deployment({"num_replicas": 2, "placement": place})
    assert dep.ray_actor_options["resources"] == {"engine": 1.0}
    assert dep._replica_config.max_replicas_per_node == 1
    tp_args = {"engine": {"tensor_parallel_size": 2}, "engine_num_gpus": 2}
    tp = engine_deployment({**tp_args, "placement": {"engine_resources": {"engine": 1}}})
    bundles = tp._replica_config.placement_group_bundles
    assert bundles[0]["engine"] == 1.0 and "engine" not in bundles[1]
    assert "resources" not in tp.ray_actor_options
    with pytest.raises(ServeConfigError, match="max_engine_replicas_per_node"):
        load_serve_config({**tp_args, "placement": place}, "test")


def test_a_cold_start_predictor_model_is_what_a_new_replica_plans_with(tmp_path: Path) -> None:
    from slidingserve.engine.latency_source import load_model_dir
    from slidingserve.latency import BatchShape

    cfg = load_serve_config({"engine": {"cold_start_model": "cpu-tiny"}})
    files = ReplicaFiles(tmp_path / "replica")
    scheduler_kwargs(cfg, files)
    model, version = load_model_dir(files.latency_model)
    assert version.startswith("cold-start-lgbm-v")  # apart from a published model's version
    # the CPU steps' shape: a 256-token prefill costs several decode-only steps of 4 requests
    prefill = model.predict(BatchShape(prefill=((256, 0),)))
    decode = model.predict(BatchShape(decode_ctx=(300, 300, 300, 300)))
    assert prefill > 2 * decode > 0
    # a published model replaces it and is kept over a restart; a cold start follows the config
    from predictor.bundle import load_bundle
    from slidingserve.latency.named import SHIPPED_MODEL_DIRS
    from slidingserve.serve.predictor_link import swap_model_dir

    swap_model_dir(load_bundle(SHIPPED_MODEL_DIRS["cpu-tiny"]), files.latency_model)
    assert load_model_dir(files.latency_model)[1].startswith("lgbm-v")
    scheduler_kwargs(cfg, files)
    assert load_model_dir(files.latency_model)[1].startswith("lgbm-v")
    fresh = ReplicaFiles(tmp_path / "other")
    scheduler_kwargs(cfg, fresh)
    scheduler_kwargs(load_serve_config({}), fresh)  # the config dropped the cold-start model
    assert load_model_dir(fresh.latency_model)[1] == "roofline-cold-start"
