"""Deploy artifacts validate against Ray's own schemas and agree with each other."""

from __future__ import annotations

import copy
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from slidingserve.serve.app import build, engine_options
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
        opts = engine_options(cfg)  # autoscaled: Ray Serve gets the bounds, not a count
        assert opts["autoscaling_config"]["max_replicas"] == 8 and "num_replicas" not in opts
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
        # the guard is in the environment of the `ray start` that starts the node
        assert any(re.search(re.escape(guard) + r"\s+\S*ray start", c) for c in raw[key]), key
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["max_wrkers"] = 3
    with pytest.raises(Exception, match="max_wrkers"):
        validate_config(prepare_config(broken))


def test_prometheus_scrapes_ray_service_discovery():
    prom = load("manifests/prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    files = jobs["ray"]["file_sd_configs"][0]["files"]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def rsync_excluded(path: str, patterns: list[str]) -> bool:
    """Whether rsync's ``--exclude PATTERN`` (one per pattern, as the cluster launcher passes
    them) drops ``path`` (relative to the synced folder); the pattern forms used here only."""
    parts = path.split("/")
    for pat in patterns:
        if pat.startswith("/"):  # anchored at the synced folder
            head = pat[1:].split("/")
            if len(parts) >= len(head) and all(map(fnmatch, parts, head)):
                return True
            continue
        name = pat.removeprefix("**/")
        assert "/" not in name, f"pattern form {pat!r} not modelled here"
        if any(fnmatch(part, name) for part in parts):  # a name at any depth
            return True
    return False


def test_ray_cluster_ships_predictor_data_but_not_local_state():
    excludes = load("ray_cluster.yaml")["rsync_exclude"]
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "predictor" / "data").rglob("*")
            if p.is_file()]
    assert data and not [p for p in data if rsync_excluded(p, excludes)]
    for local in (".venv/bin/python", "data/serve/r1/steps.parquet", "results/x.json",
                  ".git/HEAD", "slidingserve/__pycache__/cli.cpython-311.pyc"):
        assert rsync_excluded(local, excludes), local
    assert not rsync_excluded("slidingserve/configs/slo_tiers.yaml", excludes)


def test_ray_cluster_runs_python_311_and_passes_the_hf_token():
    raw = load("ray_cluster.yaml")
    setup = raw["setup_commands"]
    venv = "~/venv"
    assert any("--python 3.11" in c and venv in c for c in setup)
    assert any("sys.version_info[:2] == (3, 11)" in c for c in setup)  # fails setup otherwise
    assert any(f"--python {venv}/bin/python" in c and '".[gpu]"' in c for c in setup)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if " start " in f" {c} "]
        assert starts and all(f"{venv}/bin/ray start" in c for c in starts), key
        # Ray expands ${HF_TOKEN} in runtime_env from the environment `ray start` ran in
        assert all(c.index("export HF_TOKEN=") < c.index("ray start") for c in starts), key
    token = "~/.cache/huggingface/token"
    assert raw["file_mounts"][token] == token
    assert raw["provider"]["cache_stopped_nodes"] is True  # stopped nodes keep the model cache


def test_serve_config_passes_hf_env_and_caches_models_on_the_nodes_volume():
    env = load("deploy/serve_config.yaml")["applications"][0]["runtime_env"]["env_vars"]
    assert env["HF_TOKEN"] == "${HF_TOKEN}"
    data_dir = env["SLIDINGSERVE_DATA_DIR"]
    assert env["HF_HOME"].startswith(data_dir + "/")
    setup = load("ray_cluster.yaml")["setup_commands"]
    made = [c for c in setup if "mkdir" in c and env["HF_HOME"] in c]
    assert made and "chown" in made[0]  # created, writable by the user Ray runs as
    k8s = load("manifests/rayservice.yaml")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    pod = k8s["template"]["spec"]
    (mount,) = pod["containers"][0]["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == data_dir and volume["hostPath"]["path"] == data_dir
    env_k8s = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env_k8s["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
