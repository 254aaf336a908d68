"""CLI of the serve package: ``slidingserve serve``, ``dashboards push|render``, ``bench http``,
``bench routers``.

Mounted into the main ``slidingserve`` app with one ``app.add_typer(serve_cli)`` line.
"""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import typer
import yaml

serve_cli = typer.Typer(no_args_is_help=True)
dashboards_cli = typer.Typer(help="Grafana dashboards for the application's metrics.",
                             no_args_is_help=True)
bench_cli = typer.Typer(help="Load generators.", no_args_is_help=True)
APP_NAME = "slidingserve"
serve_cli.add_typer(dashboards_cli, name="dashboards")
serve_cli.add_typer(bench_cli, name="bench")


def repo_file(*parts: str) -> Path:
    """A file shipped next to the package (``deploy/``, ``manifests/``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{'/'.join(parts)} not found next to the slidingserve package")


def load_serve_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(http_options, application args) of a Serve config file, validated by Ray's schema."""
    from ray.serve.schema import ServeDeploySchema

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    schema = ServeDeploySchema.model_validate(raw)
    apps = [a for a in schema.applications if a.import_path == "slidingserve.serve.app:build"]
    if len(apps) != 1:
        raise typer.BadParameter(
            f"{path}: expected exactly one application with import_path "
            f"slidingserve.serve.app:build (found {len(apps)})"
        )
    return raw.get("http_options", {}) or {}, dict(apps[0].args or {})


def curl_line(url: str, tier: str, keyed: bool) -> str:
    body = json.dumps({"prompt": "ka ko ri su", "max_tokens": 16, "stream": False})
    auth = ' -H "Authorization: Bearer $SLIDINGSERVE_KEY"' if keyed else ""
    return (f"curl -s {url}/v1/completions -H 'content-type: application/json' "
            f"-H 'x-slo-tier: {tier}'{auth} -d {shlex.quote(body)}")


@serve_cli.command("serve")
def serve_cmd(
    config: Path = typer.Option(None, help="Serve config file (default: the embedded one, "
                                "slidingserve/configs/local.yaml = deploy/local.yaml)."),
    host: str = typer.Option(None, help="HTTP host (default: from the config)."),
    port: int = typer.Option(None, help="HTTP port (default: from the config)."),
    replicas: int = typer.Option(None, help="Engine replicas (default: from the config)."),
    metrics_port: int = typer.Option(None, help="Ray's Prometheus metrics port (default: Ray's)."),
    num_cpus: int = typer.Option(None, help="CPUs for the local Ray (default: all)."),
    verbose: bool = typer.Option(False, help="Stream Ray/vLLM worker logs to the console."),
) -> None:
    """Start local Ray and the application; print its URL and a curl line; serve until Ctrl-C
    (or SIGTERM, as ``docker stop`` and systemd send: the same clean shutdown)."""
    import ray
    from ray import serve

    from slidingserve.serve.app import build_app
    from slidingserve.serve.auth import KeyTable
    from slidingserve.serve.config import ServeConfigError, load_serve_config
    from slidingserve.serve.health import wait_until_running
    from slidingserve.serve.proxy_guard import guarded_ray_start
    from slidingserve.slo.tiers import load_tiers, shipped_file

    path = config or shipped_file("local.yaml")
    http, args = load_serve_file(path)
    if replicas is not None:
        args["num_replicas"] = replicas
    try:
        cfg = load_serve_config(args, str(path))
        tiers = load_tiers(cfg.tiers_path)
        keys = KeyTable(cfg.auth.resolved_keys(), tiers)
    except (ServeConfigError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    host = host or http.get("host", "127.0.0.1")
    port = port or int(http.get("port", 8000))
    typer.echo(f"slidingserve: {keys.describe()}")
    auto = cfg.autoscaling_config
    count = (f"{cfg.num_replicas}" if auto is None else
             f"{auto.get('min_replicas', 1)}-{auto.get('max_replicas', 1)} (autoscaled)")
    typer.echo(f"slidingserve: starting Ray and {count} engine replica(s) of "
               f"{cfg.engine.name!r} (first start builds the model; this takes a minute or two)")
    # a fresh local cluster, never someone else's running one
    init: dict[str, Any] = {"address": "local", "include_dashboard": False,
                            "log_to_driver": verbose}
    if num_cpus is not None:
        init["num_cpus"] = num_cpus
    if metrics_port is not None:
        init["_metrics_export_port"] = metrics_port
    with guarded_ray_start():  # the proxy loads IngressGuard from the raylet's environment
        ray.init(**init)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve.start(http_options={"host": host, "port": port})
        t0 = time.time()
        serve._run(build_app(cfg), _blocking=False, name=APP_NAME, route_prefix="/")
        try:
            wait_until_running(APP_NAME, lambda line: typer.echo(f"  {line}"))
        except RuntimeError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None
        url = f"http://{host}:{port}"
        typer.secho(f"\nslidingserve is up at {url} ({time.time() - t0:.0f}s)", fg="green")
        typer.echo(f"tiers: {', '.join(tiers)} (default {tiers.default_name})")
        typer.echo("try:\n  " + curl_line(url, "interactive", not keys.open) + "\n")
        if not verbose:
            typer.echo("replica logs: /tmp/ray/session_latest/logs/serve/ (--verbose to stream)")
        typer.echo("serving; press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("\nslidingserve: stopping")
    finally:
        serve.shutdown()
        ray.shutdown()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop like Ctrl-C, so that Serve and the local Ray are shut down (the
    default action would kill the driver and leave them running)."""
    raise KeyboardInterrupt


@dashboards_cli.command("render")
def dashboards_render(
    out: Path = typer.Option(None, help="Output folder (default: manifests/grafana)."),
) -> None:
    """Write the dashboards' JSON files."""
    from slidingserve.serve.dashboards import render

    target = out or repo_file("manifests") / "grafana"
    for path in render(target):
        typer.echo(str(path))


@dashboards_cli.command("push")
def dashboards_push(
    url: str = typer.Option(..., help="Grafana base URL, e.g. http://grafana:3000"),
    token: str = typer.Option(..., envvar="GRAFANA_TOKEN", help="Grafana service-account token."),
    folder_uid: str = typer.Option(None, help="Grafana folder uid (default: General)."),
    source: Path = typer.Option(None, help="Folder of dashboard JSON (default: built in)."),
) -> None:
    """Create or overwrite the dashboards in a Grafana (grafana-client)."""
    from slidingserve.serve.dashboards import DashboardPushError, dashboards, load_dir, push

    try:
        boards = load_dir(source) if source is not None else dashboards()
        for link in push(url, token, boards, folder_uid):
            typer.echo(f"pushed {link}")
    except DashboardPushError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


@bench_cli.command("http")
def bench_http(
    url: str = typer.Option(..., help="Base URL of the deployment, e.g. http://127.0.0.1:8000"),
    rate: float = typer.Option(..., help="Mean request rate (requests/s, Poisson arrivals)."),
    duration: float = typer.Option(..., help="Seconds of arrivals."),
    trace: Path = typer.Option(None, help="Azure trace CSV for lengths (default: synthetic)."),
    tier_mix: str = typer.Option(None, help="e.g. interactive=0.2,standard=0.5,batch=0.3"),
    tiers_path: Path = typer.Option(
        None, "--tiers", help="Tier file or built-in name: qoserve (default), tight, cpu-tiny."
    ),
    max_prompt_tokens: int = typer.Option(1024, help="Clip prompts to this many tokens."),
    max_output_tokens: int = typer.Option(128, help="Clip outputs to this many tokens."),
    api_key: str = typer.Option(None, envvar="SLIDINGSERVE_KEY", help="Bearer API key."),
    model: str = typer.Option(None, help="Model name to send (default: the server's)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("results/bench_http"), help="Folder for summary.json."),
) -> None:
    """Open-loop streaming load; client-side TTFT/TPOT per tier; writes summary.json."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from slidingserve.serve.bench_http import BenchConfig, bench_summary, plan, run_bench
    from slidingserve.slo.tiers import TierConfigError, load_tiers
    from slidingserve.workload.tiermix import TierMixError, parse_tier_mix

    try:
        tiers = load_tiers(tiers_path)
        mix = parse_tier_mix(tier_mix, tiers) if tier_mix else None
        cfg = BenchConfig(url=url.rstrip("/"), rate=rate, duration_s=duration, tier_mix=mix,
                          trace=str(trace) if trace else None, max_prompt_tokens=max_prompt_tokens,
                          max_output_tokens=max_output_tokens, api_key=api_key, model=model,
                          seed=seed)
        n = len(plan(cfg, tiers))
    except (TierConfigError, TierMixError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"{n} requests at {rate:g}/s", total=n)
        outcomes = asyncio.run(run_bench(cfg, tiers, lambda: bar.advance(task)))
    summary = bench_summary(cfg, tiers, outcomes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"bench http {url} ({summary['duration_s']:.1f}s)")
    for col in ("tier", "requests", "finished", "429", "SLO attainment", "TTFT p50 s",
                "TTFT p99 s", "TPOT p50 s", "goodput req/s"):
        table.add_column(col)
    rejected = summary["http"]["rejected_429_by_tier"]
    for name, g in [*summary["tiers"].items(), ("all", summary["overall"])]:
        if not g["requests"]:
            continue
        att = g["slo_attainment"]
        table.add_row(name, str(g["requests"]), str(g["finished"]),
                      str(rejected.get(name, sum(rejected.values()) if name == "all" else 0)),
                      f"{att:.3f}" if att is not None else "-", _fmt(g["ttft_s"]["p50"]),
                      _fmt(g["ttft_s"]["p99"]), _fmt(g["tpot_s"]["p50"]),
                      _fmt(g["goodput_rps"]))
    Console(width=120).print(table)
    typer.echo(f"wrote {out / 'summary.json'}")


@bench_cli.command("routers")
def bench_routers(
    rate: float = typer.Option(..., help="Mean request rate (requests/s, Poisson arrivals)."),
    duration: float = typer.Option(..., help="Seconds of arrivals per seed."),
    seeds: str = typer.Option("0", help="Comma-separated workload seeds, e.g. 0,1."),
    routers: str = typer.Option("slack,pow2", help="slack (ours), pow2 (Ray Serve's default)."),
    replicas: int = typer.Option(2, help="Engine replicas."),
    config: Path = typer.Option(None, help="Serve config file (default: the embedded one)."),
    num_cpus: int = typer.Option(4, help="CPUs for the local Ray."),
    trace: Path = typer.Option(None, help="Azure trace CSV for lengths (default: synthetic)."),
    tier_mix: str = typer.Option(None, help="e.g. interactive=0.2,standard=0.5,batch=0.3"),
    tiers_path: Path = typer.Option(None, "--tiers", help="Tier set for the app and the "
                                    "client (default: the config's)."),
    max_prompt_tokens: int = typer.Option(1024, help="Clip prompts to this many tokens."),
    max_output_tokens: int = typer.Option(128, help="Clip outputs to this many tokens."),
    out: Path = typer.Option(Path("results/bench_routers"), help="Output folder."),
) -> None:
    """The slack router vs Ray Serve's default router on the real app: the app is started
    locally once per router (same config but ``router.enabled``) and gets the same open-loop
    workload per seed; prints attainment and TTFT percentiles per router and tier."""
    from rich.console import Console
    from rich.table import Table

    from slidingserve.serve.bench_http import BenchConfig
    from slidingserve.serve.bench_routers import COLUMNS, RouterBenchConfig, compare_routers, rows
    from slidingserve.serve.config import ServeConfigError, load_serve_config
    from slidingserve.slo.tiers import TierConfigError, load_tiers, shipped_file
    from slidingserve.workload.tiermix import TierMixError, parse_tier_mix

    path = config or shipped_file("local.yaml")
    _, args = load_serve_file(path)
    if tiers_path is not None:
        args["tiers_path"] = str(tiers_path)
    try:
        tiers = load_tiers(load_serve_config(args, str(path)).tiers_path)
        mix = parse_tier_mix(tier_mix, tiers) if tier_mix else None
        workload = BenchConfig(url="http://127.0.0.1", rate=rate, duration_s=duration,
                               tier_mix=mix, trace=str(trace) if trace else None,
                               max_prompt_tokens=max_prompt_tokens,
                               max_output_tokens=max_output_tokens)
        cfg = RouterBenchConfig(workload, tuple(int(x) for x in seeds.split(",") if x.strip()),
                                tuple(r.strip() for r in routers.split(",") if r.strip()),
                                replicas, num_cpus)
    except (ServeConfigError, TierConfigError, TierMixError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    results = compare_routers(cfg, args, tiers, out, lambda line: typer.echo(line, err=True))
    table = Table(title=f"bench routers: {replicas} replicas, {rate:g} req/s x {duration:g} s, "
                        f"seeds {seeds}")
    for col in COLUMNS:
        table.add_column(col)
    for row in rows(results):
        table.add_row(*row)
    Console(width=140).print(table)
    typer.echo(f"wrote {out / 'routers.json'}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
