"""``slidingserve bench faults --out DIR``: the reliability scenarios, a table, faults.json.

``--soak MINUTES`` runs the soak instead: DIR/soak.json, DIR/soak.png and a table of targets.

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
        ("security", "bad_input", "predictor_failure", "replica_failure", "ingress_failure",
         "overload")),
        help="Comma-separated scenarios to run, in order."),
    config: Path = typer.Option(None, help="Serve config for the base app (default: "
                                           "deploy/local.yaml, the embedded default)."),
    replicas: int = typer.Option(2, help="Engine replicas (>= 2 for replica_failure)."),
    ingress_replicas: int = typer.Option(2, help="Ingress replicas (>= 2 for "
                                                 "ingress_failure)."),
    tiers: str = typer.Option("qoserve", help="Tier set the app serves: a built-in name "
                                              "(qoserve, tight, cpu-tiny), a file, or 'config' "
                                              "for the serve config's own."),
    num_cpus: int = typer.Option(4, help="CPUs for the local Ray."),
    overload_factors: str = typer.Option("2,4", help="Offered loads / measured capacity, one "
                                                      "overload run each (comma-separated)."),
    overload_mix: str = typer.Option("", help="Overload tier mix, e.g. 'interactive=0.3,"
                                              "standard=0.3,batch=0.4' (default: the tiers' "
                                              "shares)."),
    overload_s: float = typer.Option(30.0, help="Seconds of overload arrivals."),
    overload_capacity: float = typer.Option(None, help="Capacity in req/s the overload "
                                                       "factors multiply, instead of the "
                                                       "measured one (bursts still run)."),
    fuzz_examples: int = typer.Option(25, help="Schemathesis cases per operation and mode."),
    soak: float = typer.Option(None, help="Run the soak for MINUTES instead of the scenarios "
                                          "(DIR/soak.json, DIR/soak.png)."),
    soak_load: float = typer.Option(0.8, help="Soak load as a fraction of measured capacity."),
    soak_rate: float = typer.Option(None, help="Soak arrival rate in req/s (instead of "
                                               "--soak-load x capacity)."),
    soak_repeat: bool = typer.Option(True, help="Play one schedule of a third of the soak "
                                                "three times, so the first and last thirds "
                                                "compare the same requests (--no-soak-repeat: "
                                                "one schedule over the whole soak)."),
    seed: int = typer.Option(0),
) -> None:
    """Run the scenarios on a local Ray Serve app; print a table; write DIR/faults.json."""
    from dataclasses import replace

    from slidingserve.faults.runner import FaultsConfig, run_all, soak_app
    from slidingserve.faults.soak import SoakConfig
    from slidingserve.serve.cli import load_serve_file, repo_file

    try:
        base = FaultsConfig()
        cfg = FaultsConfig(
            scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()),
            replicas=replicas, ingress_replicas=ingress_replicas, num_cpus=num_cpus,
            tiers=None if tiers == "config" else tiers,
            overload=replace(base.overload, factors=parse_factors(overload_factors),
                             tier_mix=parse_mix(overload_mix), duration_s=overload_s, seed=seed,
                             capacity_rps=parse_capacity(overload_capacity)),
            bad_input=replace(base.bad_input, fuzz_examples=fuzz_examples, seed=seed))
        soak_cfg = None if soak is None else SoakConfig(
            minutes=soak, load=soak_load, rate_rps=soak_rate,
            tier_mix=parse_mix(overload_mix), seed=seed, repeat=soak_repeat)
        _, args = load_serve_file(config or repo_file("deploy", "local.yaml"))
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    if soak_cfg is not None:
        write_soak(soak_app(cfg, soak_cfg, args,
                            progress=lambda m: typer.echo(f"[soak] {m}", err=True)), out)
        return
    report = run_all(cfg, args, repo_file("deploy").parent,
                     progress=lambda m: typer.echo(f"[faults] {m}", err=True))
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    if "runs" in report["scenarios"].get("overload", {}):
        print_overload_table(report["scenarios"]["overload"])
    typer.echo(f"wrote {out / 'faults.json'}")


def parse_capacity(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"--overload-capacity: want a positive rate in req/s (got {value})")
    return value


def parse_factors(text: str) -> tuple[float, ...]:
    try:
        factors = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--overload-factors: not a comma-separated list of numbers: "
                         f"{text!r}") from None
    if not factors or any(not f > 0 for f in factors):
        raise ValueError(f"--overload-factors: want positive numbers (got {text!r})")
    return factors


def parse_mix(text: str) -> tuple[tuple[str, float], ...] | None:
    if not text.strip():
        return None
    out = []
    for item in text.split(","):
        name, sep, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not value > 0:
            raise ValueError(f"--overload-mix: entry {item!r} is not 'tier=share' with a "
                             "positive share")
        out.append((name.strip(), value))
    return tuple(out)


def headline(name: str, r: dict[str, Any]) -> str:
    """The one figure each scenario is about, in words."""
    if "failed" in r:
        return f"FAILED: {r['failed'][:70]}"
    if name == "overload":
        parts = []
        for label, run in r.get("runs", {}).items():
            top = run["tiers"].get(next(iter(run["tiers"]), ""), {})
            parts.append(f"{label} ({run['rate_rps']:.2f} req/s): top tier TTFT ok "
                         f"{_pct(top.get('ttft_attainment'))}, 429s {run['rejected_429']}")
        return "; ".join(parts) + f" (capacity {r['capacity']['capacity_rps']:.2f} req/s)"
    if name == "replica_failure":
        ns = r.get("not_started", {})
        return (f"killed-replica streams {r['streams']['on_killed']['error']} err/"
                f"{r['streams']['on_killed']['sent']}; not started at the kill: "
                f"{ns.get('error', '-')} err/{ns.get('sent', '-')} ({ns.get('retried', '-')} "
                f"retried); recovered {r['recovered']} in {r['recovery_s']}s; orphans "
                f"{len(r['orphan_engine_processes'])}")
    if name == "ingress_failure":
        on_killed, whole, probes = r["streams"]["on_killed"], r["whole"], r["probes"]
        tiers = ", ".join(f"{t} {v['answered']}/{v['sent']}" for t, v in r["by_tier"].items())
        return (f"answered per tier: {tiers}; killed-ingress streams {on_killed['error']} err/"
                f"{on_killed['sent']}; not-started {whole['served']}/{whole['sent']} served "
                f"({whole['retried']} retried); probes {probes['served']}/{probes['sent']}; "
                f"recovered {r['recovered']} in {r['recovery_s']}s")
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


def print_overload_table(r: dict[str, Any]) -> None:
    """Per factor and tier: admitted, refused, TTFT attainment, p50/p99."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"overload per tier (capacity {r['capacity']['capacity_rps']:.2f} "
                        "req/s; TTFT ok = admitted and first token within target)")
    for col in ("load", "tier", "sent", "admitted", "refused 429", "errors", "lost",
                "TTFT ok", "TTFT p50 s", "TTFT p99 s"):
        table.add_column(col)
    for label, run in r["runs"].items():
        for tier, t in run["tiers"].items():
            table.add_row(label, tier, str(t["sent"]), str(t["admitted"]),
                          str(t["rejected_429"]), str(t["errors"]), str(t["lost"]),
                          _pct(t["ttft_attainment"]), _num(t["ttft_p50_s"]),
                          _num(t["ttft_p99_s"]))
    console = Console(width=160)
    console.print(table)
    for label, run in r["runs"].items():
        if "cpu_cores" in run:
            console.print(f"{label}: cores busy on average: load generator "
                          f"{run['cpu_cores']['client']:.2f}, cluster "
                          f"{run['cpu_cores']['cluster']:.2f}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _interval(ci: list[float] | None) -> str:
    """`` (90% interval -55..+10%)`` for a bootstrap interval of a change, '' without one."""
    return "" if not ci else f" (90% interval {100 * ci[0]:+.0f}..{100 * ci[1]:+.0f}%)"


def _context(stable: dict) -> str:
    """The medians' change and the host probe's beside the p99's (not part of the target)."""
    med = stable.get("median_change") or {}
    host = stable.get("host_probe_change")
    parts = []
    if med:
        parts.append("p50 " + " / ".join("-" if v is None else f"{100 * v:+.0f}%"
                                         for v in med.values()))
    if host is not None:
        parts.append(f"host probe {100 * host:+.0f}% (time of the same CPU work)")
    return ("; " + ", ".join(parts)) if parts else ""


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


def write_soak(report: dict[str, Any], out: Path) -> None:
    """DIR/soak.json, DIR/soak.png and the table of targets."""
    from rich.console import Console
    from rich.table import Table

    from slidingserve.faults.soak_report import plot_soak

    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=str))
    plot_soak(report, out / "soak.png")
    req = report["requests"]
    table = Table(title=f"soak {report['minutes']:g} min at {report['rate_rps']:.2f} req/s: "
                        f"{req['sent']} requests ({req['streamed']} streamed), "
                        f"{report['left_mid_stream']['left']} left mid-stream")
    for col in ("target", "met", "figure"):
        table.add_column(col)
    t = report["targets"]
    ci = t["ttft_p99_stable"].get("change_interval_90") or {}
    rows = {
        "nothing lost": f"lost {req['lost']}; served {req['served']}, 429 {req['rejected']}, "
                        f"errors {req['error']}",
        "no replica restart": f"new {t['no_replica_restart']['new'] or 'none'}",
        "KV blocks freed": f"in use at the end {t['kv_blocks_freed']['in_use_at_end']}",
        "RSS flat (<= 5%)": f"max growth {100 * t['rss_flat']['max_growth']:.1f}% "
                            f"({t['rss_flat']['process']})",
        "p99 TTFT stable (<= 10%)": ", ".join(
            f"{k} {'-' if v is None else f'{100 * v:+.0f}%'}{_interval(ci.get(k))}"
            for k, v in t["ttft_p99_stable"]["change"].items())
        + ("; same requests in both thirds" if t["ttft_p99_stable"].get("paired") else "")
        + _context(t["ttft_p99_stable"]),
    }
    for (label, figure), ok in zip(rows.items(), (v["ok"] for v in t.values()), strict=True):
        table.add_row(label, "yes" if ok else "NO", figure)
    Console(width=160).print(table)
    typer.echo(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
