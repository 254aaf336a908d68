"""Deploy artifacts validate against Ray's own schemas and agree with each other."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from slidingserve.serve.app import build
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.proxy_guard import guarded_env

ROOT = Path(__file__).resolve().parents[2]
SERVE_FILES = ["deploy/serve_config.yaml", "deploy/local.yaml"]


def load(rel: str):
    return yaml.safe_load((ROOT / rel).read_text())


@pytest.mark.parametrize("rel", SERVE_FILES)
def test_serve_configs_pass_ray_schema_and_our_args(rel):
    schema = ServeDeploySchema.model_validate(load(rel))
    (app,) = schema.applications
    assert app.import_path == "slidingserve.serve.app:build"
    cfg = load_serve_config(app.args, rel)
    built = build(app.args)  # the builder accepts them (no Ray needed to bind)
    assert built is not None
    if rel.endswith("serve_config.yaml"):
        assert cfg.engine_num_gpus == 1 and cfg.engine.model != "tiny"
    else:
        assert cfg.engine_num_gpus == 0 and cfg.engine.model == "tiny" and cfg.num_replicas == 1


def test_ray_schema_rejects_a_broken_serve_config():
    bad = load("deploy/local.yaml")
    bad["applications"][0]["import_path"] = "nocolon"
    with pytest.raises(ValueError, match="import_path"):
        ServeDeploySchema.model_validate(bad)


def test_rayservice_embeds_the_cluster_serve_config():
    docs = load("manifests/rayservice.yaml")
    assert docs["apiVersion"] == "ray.io/v1" and docs["kind"] == "RayService"
    serve_v2 = yaml.safe_load(docs["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_v2)
    assert serve_v2 == load("deploy/serve_config.yaml")
    cluster = docs["spec"]["rayClusterConfig"]
    (workers,) = cluster["workerGroupSpecs"]
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert cluster["headGroupSpec"]["rayStartParams"]["metrics-export-port"] == "8080"
    (name, value), = guarded_env().items()  # every node's proxy loads the ingress guard
    for group in (cluster["headGroupSpec"], workers):
        (container,) = group["template"]["spec"]["containers"]
        assert {"name": name, "value": value} in container["env"]


def test_ray_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load("ray_cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(raw)))
    gpu = raw["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] == 1
    assert any("--metrics-export-port=8080" in c for c in raw["head_start_ray_commands"])
    guard = "=".join(next(iter(guarded_env().items())))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any(c.startswith(guard) for c in raw[key]), key
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["max_wrkers"] = 3
    with pytest.raises(Exception, match="max_wrkers"):
        validate_config(prepare_config(broken))


def test_prometheus_scrapes_ray_service_discovery():
    prom = load("manifests/prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    files = jobs["ray"]["file_sd_configs"][0]["files"]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
