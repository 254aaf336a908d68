"""Run the reliability scenarios against one local application and collect ``faults.json``.

The application is the embedded default (``deploy/local.yaml``'s args) with what the scenarios
need on top: ``replicas`` engine replicas and ``ingress_replicas`` ingress replicas (a
failure needs a survivor), two API keys made up for this run (one for every tier, one for
``batch`` only), and the predictor link. Scenarios run in a fixed order on the same cluster;
the log scan for keys runs last, over everything. ``soak_app`` runs the soak on its own app.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidingserve.faults.bad_input import BadInputConfig, run_bad_input
from slidingserve.faults.harness import AppUnderTest, local_app
from slidingserve.faults.ingress_failure import IngressFailureConfig, run_ingress_failure
from slidingserve.faults.overload import OverloadConfig, run_overload
from slidingserve.faults.predictor_failure import (
    PredictorFailureConfig,
    create_predictor,
    run_predictor_failure,
)
from slidingserve.faults.replica_failure import ReplicaFailureConfig, run_replica_failure
from slidingserve.faults.security import find_key_leaks, run_security
from slidingserve.faults.soak import SoakConfig, run_soak

SCENARIOS = ("security", "bad_input", "predictor_failure", "replica_failure", "ingress_failure",
             "overload")


@dataclass(frozen=True)
class FaultsConfig:
    scenarios: tuple[str, ...] = SCENARIOS
    replicas: int = 2
    ingress_replicas: int = 2
    num_cpus: int = 4
    tiers: str | None = "qoserve"  # tier set the app serves (None: the base config's)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    replica_failure: ReplicaFailureConfig = field(default_factory=ReplicaFailureConfig)
    ingress_failure: IngressFailureConfig = field(default_factory=IngressFailureConfig)
    predictor_failure: PredictorFailureConfig = field(default_factory=PredictorFailureConfig)
    bad_input: BadInputConfig = field(default_factory=BadInputConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValueError(f"scenarios: unknown {unknown or 'empty list'} "
                             f"(known: {', '.join(SCENARIOS)})")
        if self.replicas < 2 and "replica_failure" in self.scenarios:
            raise ValueError(f"replicas: replica_failure needs >= 2 (got {self.replicas})")
        if self.ingress_replicas < 2 and "ingress_failure" in self.scenarios:
            raise ValueError(f"ingress_replicas: ingress_failure needs >= 2 "
                             f"(got {self.ingress_replicas})")


def app_args(base: dict[str, Any], replicas: int, keys: dict[str, list[str]],
             tiers: str | None = None, ingress_replicas: int = 1) -> dict[str, Any]:
    """The app under test: ``base`` with ``replicas`` engine and ``ingress_replicas`` ingress
    replicas, ``keys``, the predictor link and (unless None) the tier set ``tiers`` (a built-in
    name or a file)."""
    args = {**base, "num_replicas": replicas, "ingress_replicas": ingress_replicas,
            "auth": {"keys": keys, "keys_env": None},
            "predictor": {"enabled": True, "poll_period_s": 0.5, "sample_batch": 8,
                          "retrain_every_s": None}}
    args["engine"] = {**base.get("engine", {}), "step_trace_flush_every": 4}
    if tiers is not None:
        args["tiers_path"] = tiers
    return args


def made_up_keys() -> dict[str, list[str]]:
    """Two API keys for one run: the first opens every tier, the second ``batch`` only."""
    return {f"sk-all-{secrets.token_urlsafe(18)}": ["*"],
            f"sk-batch-{secrets.token_urlsafe(18)}": ["batch"]}


def run_all(cfg: FaultsConfig, base_args: dict[str, Any], repo_root: Path,
            progress: Callable[[str], None] = print) -> dict[str, Any]:
    from slidingserve.serve.config import load_serve_config
    from slidingserve.slo.tiers import load_tiers

    keys = made_up_keys()
    all_key = next(iter(keys))
    auth = {"authorization": f"Bearer {all_key}"}
    args = app_args(base_args, cfg.replicas, keys, cfg.tiers, cfg.ingress_replicas)
    serve_cfg = load_serve_config(args, "faults app")
    tiers = load_tiers(serve_cfg.tiers_path)
    results: dict[str, Any] = {}
    t0 = time.time()
    progress(f"starting local Ray, {cfg.replicas} engine and {cfg.ingress_replicas} ingress "
             "replicas")
    with local_app(args, create_predictor, num_cpus=cfg.num_cpus) as app:
        progress(f"application up at {app.url} in {time.time() - t0:.0f}s")
        runners: dict[str, Callable[[AppUnderTest], dict[str, Any]]] = {
            "security": lambda a: run_security(a.url, keys, a.logs_dir, repo_root),
            "bad_input": lambda a: asyncio.run(run_bad_input(
                a.url, auth, serve_cfg.engine.max_model_len, cfg.bad_input,
                a.engine_replicas)),
            "predictor_failure": lambda a: run_predictor_failure(a, auth, cfg.predictor_failure),
            "replica_failure": lambda a: asyncio.run(run_replica_failure(
                a, auth, cfg.replica_failure)),
            "ingress_failure": lambda a: asyncio.run(run_ingress_failure(
                a, auth, list(tiers), cfg.ingress_failure)),
            "overload": lambda a: run_overload(a.url, tiers, cfg.overload, all_key),
        }
        for name in cfg.scenarios:
            progress(f"scenario {name} ...")
            s0 = time.time()
            try:
                results[name] = runners[name](app)
            except Exception as exc:  # a scenario that cannot finish is reported, not hidden
                results[name] = {"sent": 0, "answered": 0, "lost": 0,
                                 "failed": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-2000:]}
            results[name]["scenario_s"] = round(time.time() - s0, 1)
            progress(f"scenario {name}: sent {results[name]['sent']}, "
                     f"lost {results[name]['lost']} ({results[name]['scenario_s']}s)")
        if "security" in results:
            leaks = find_key_leaks(app.logs_dir, list(keys))
            results["security"]["logs"] = leaks
            results["security"]["keys_in_logs"] = len(leaks["files_with_a_key"])
    return {"scenarios": results, "lost": sum(int(r["lost"]) for r in results.values()),
            "config": {"replicas": cfg.replicas, "ingress_replicas": cfg.ingress_replicas,
                       "scenarios": list(cfg.scenarios),
                       "app": {**args, "auth": {"keys": "<2 keys made up for this run>"}}},
            "wall_s": round(time.time() - t0, 1)}


def soak_app(cfg: FaultsConfig, soak: SoakConfig, base_args: dict[str, Any],
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The soak on a local app built as for the scenarios; its report (see ``soak_report``)."""
    from slidingserve.serve.config import load_serve_config
    from slidingserve.slo.tiers import load_tiers

    keys = made_up_keys()
    args = app_args(base_args, cfg.replicas, keys, cfg.tiers, cfg.ingress_replicas)
    tiers = load_tiers(load_serve_config(args, "soak app").tiers_path)
    t0 = time.time()
    progress(f"starting local Ray, {cfg.replicas} engine and {cfg.ingress_replicas} ingress "
             "replicas")
    with local_app(args, create_predictor, num_cpus=cfg.num_cpus) as app:
        progress(f"application up at {app.url} in {time.time() - t0:.0f}s; soaking "
                 f"{soak.minutes:g} min")
        report = run_soak(app, tiers, soak, next(iter(keys)), progress)
    report["app"] = {"replicas": cfg.replicas, "ingress_replicas": cfg.ingress_replicas,
                     "tiers": cfg.tiers, "num_cpus": cfg.num_cpus}
    report["wall_s"] = round(time.time() - t0, 1)
    return report
