"""``slidingserve bench faults --out DIR``: the reliability scenarios, a table, faults.json.

Mounted under ``slidingserve bench`` with one ``add_typer(faults_cli, name="faults")`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

faults_cli = typer.Typer(help="Reliability scenarios (overload, failures, bad input, security).")


@faults_cli.callback(invoke_without_command=True)
def bench_faults(
    out: Path = typer.Option(..., help="Folder for faults.json."),
    scenarios: str = typer.Option(",".join(
        ("security", "bad_input", "predictor_failure", "replica_failure", "overload")),
        help="Comma-separated scenarios to run, in order."),
    config: Path = typer.Option(None, help="Serve config for the base app (default: "
                                           "deploy/local.yaml, the embedded default)."),
    replicas: int = typer.Option(2, help="Engine replicas (>= 2 for replica_failure)."),
    num_cpus: int = typer.Option(4, help="CPUs for the local Ray."),
    overload_factor: float = typer.Option(2.0, help="Offered load / measured capacity."),
    overload_s: float = typer.Option(30.0, help="Seconds of overload arrivals."),
    fuzz_examples: int = typer.Option(25, help="Schemathesis cases per operation and mode."),
    seed: int = typer.Option(0),
) -> None:
    """Run the scenarios on a local Ray Serve app; print a table; write DIR/faults.json."""
    from dataclasses import replace

    from slidingserve.faults.runner import FaultsConfig, run_all
    from slidingserve.serve.cli import load_serve_file, repo_file

    try:
        base = FaultsConfig()
        cfg = FaultsConfig(
            scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()),
            replicas=replicas, num_cpus=num_cpus,
            overload=replace(base.overload, factor=overload_factor, duration_s=overload_s,
                             seed=seed),
            bad_input=replace(base.bad_input, fuzz_examples=fuzz_examples, seed=seed))
        _, args = load_serve_file(config or repo_file("deploy", "local.yaml"))
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    report = run_all(cfg, args, repo_file("deploy").parent,
                     progress=lambda m: typer.echo(f"[faults] {m}", err=True))
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    typer.echo(f"wrote {out / 'faults.json'}")


def headline(name: str, r: dict[str, Any]) -> str:
    """The one figure each scenario is about, in words."""
    if "failed" in r:
        return f"FAILED: {r['failed'][:70]}"
    if name == "overload":
        t = r.get("tiers", {})
        inter, batch = t.get("interactive", {}), t.get("batch", {})
        return (f"{r['rate_rps']:.2f} req/s = {r['factor']:g}x cap; interactive TTFT ok "
                f"{_pct(inter.get('ttft_attainment'))}, batch TTFT p50 "
                f"{_num(batch.get('ttft_p50_s'))}s; peak mem {r['memory']['peak_total_mib']} MiB")
    if name == "replica_failure":
        return (f"killed-replica streams {r['streams']['on_killed']['error']} err/"
                f"{r['streams']['on_killed']['sent']}; recovered {r['recovered']} "
                f"in {r['recovery_s']}s; orphans {len(r['orphan_engine_processes'])}")
    if name == "predictor_failure":
        bad = r.get("bad_models", {})
        refused = sum(1 for v in bad.values() if isinstance(v, dict) and v.get("refused"))
        return (f"kept model in outage {r['during_outage']['replicas_kept_model']}; resumed "
                f"{r['after_return']['publishing_resumed']}; bad models refused {refused}/3")
    if name == "bad_input":
        return (f"{r['cases_run']} cases ({r['fuzz_cases']} fuzzed); wrong answers "
                f"{r['wrong_answers']}; replica crashed {r['replica_crashed']}")
    if name == "security":
        return (f"access wrong {r['access_wrong']}/{r['access_cases']}; keys in logs "
                f"{r['keys_in_logs']}; undocumented ports {r['ports_undocumented'] or 'none'}")
    return ""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench faults (lost in total: {report['lost']})")
    for col in ("scenario", "sent", "answered", "lost", "s", "headline"):
        table.add_column(col)
    for name, r in report["scenarios"].items():
        table.add_row(name, str(r["sent"]), str(r["answered"]), str(r["lost"]),
                      str(r.get("scenario_s", "")), headline(name, r))
    Console(width=160).print(table)
