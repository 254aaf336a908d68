"""``slidingserve sim``: simulate one workload under one policy and write its summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from slidingserve.latency import describe_latency_model, load_latency_model
from slidingserve.metrics import MAX_WINDOWS, summarize, window_count, windows
from slidingserve.sim.config import SimConfig
from slidingserve.sim.options import (
    LatencyModelOption,
    NoiseSigmaOption,
    PlannerCorrectionOption,
    PlanTimeOption,
    ReplayOption,
    SpellsOption,
    TimingOption,
    TimingSeedOption,
)
from slidingserve.sim.progress import SimProgress
from slidingserve.sim.simulator import simulate
from slidingserve.sim.timing import timing_from_options
from slidingserve.slo import load_tiers
from slidingserve.workload import WorkloadConfig, build_workload, parse_tier_mix


def sim(
    out: Annotated[Path, typer.Option(help="Output folder (summary.json, config.json).")],
    policy: Annotated[str, typer.Option(help="Registered policy name.")] = "slidingserve",
    trace: Annotated[
        Path | None, typer.Option(help="Trace CSV (Azure format); default: synthetic.")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Poisson rate, requests/s (default: replay the trace).")
    ] = None,
    num_requests: Annotated[int | None, typer.Option(help="Requests to simulate.")] = None,
    arrival: Annotated[str | None, typer.Option(help="poisson | gamma | replay.")] = None,
    cv: Annotated[float, typer.Option(help="Gamma arrivals: CV of the gaps.")] = 1.0,
    time_scale: Annotated[float, typer.Option(help="Replay: multiply trace times.")] = 1.0,
    replicas: Annotated[int, typer.Option(help="Replicas behind the router.")] = 1,
    router: Annotated[
        str, typer.Option(help="round-robin | pow2 | least-work | slack | least-loaded.")
    ] = "round-robin",
    fleet: Annotated[
        str, typer.Option(help="homogeneous | heterogeneous (odd replicas --slow-factor x slower).")
    ] = "homogeneous",
    slow_factor: Annotated[float, typer.Option(help="Heterogeneous fleet: slowdown.")] = 2.0,
    fail_at: Annotated[
        float | None, typer.Option(help="Replica 0 fails at this simulated time (s).")
    ] = None,
    tiers: Annotated[
        Path | None, typer.Option(help="SLO tier file (default deploy/slo_tiers.yaml).")
    ] = None,
    tier_mix: Annotated[
        str | None, typer.Option(help="e.g. interactive=0.2,standard=0.5,batch=0.3")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(help="Token budget for fixed-budget policies.")
    ] = None,
    kv_blocks: Annotated[
        int | None, typer.Option(help="KV blocks per replica (default: 8B on H100).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 0,
    latency_model: LatencyModelOption = None,
    timing: TimingOption = "oracle",
    timing_seed: TimingSeedOption = 0,
    noise_sigma: NoiseSigmaOption = None,
    replay: ReplayOption = None,
    plan_time_ms: PlanTimeOption = None,
    spells: SpellsOption = None,
    planner_correction: PlannerCorrectionOption = 0.0,
    window_seconds: Annotated[
        float | None,
        typer.Option(help="Also summarise every window of this many seconds of arrivals "
                     "(summary.json 'windows': queue, TTFT, attainment per tier).", min=0.001),
    ] = None,
    progress_every: Annotated[
        float,
        typer.Option(help="Print how far the run is every this many seconds of wall time "
                     "(simulated time, arrived, finished, queue); 0: never."),
    ] = 60.0,
) -> None:
    """Simulate one workload under one policy; write DIR/summary.json and DIR/config.json."""
    console = Console(stderr=True)
    if not progress_every >= 0:
        raise typer.BadParameter(f"must be >= 0 seconds (got {progress_every})",
                                 param_hint="--progress-every")
    try:
        timing_config = timing_from_options(timing, timing_seed, noise_sigma, replay, plan_time_ms,
                                            spells, planner_correction)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    tier_set = load_tiers(tiers)
    mix = parse_tier_mix(tier_mix, tier_set) if tier_mix is not None else None
    kind = arrival or ("replay" if rate is None and trace is not None else "poisson")
    if kind != "replay" and rate is None:
        raise typer.BadParameter(
            "--rate is needed without --trace (or with --arrival poisson/gamma)"
        )
    if kind != "replay" and num_requests is None:
        num_requests = 2000
    workload = WorkloadConfig(
        trace=trace,
        arrival=kind,  # type: ignore[arg-type]  # pydantic rejects anything else, naming it
        rate=rate,
        cv=cv,
        num_requests=num_requests,
        time_scale=time_scale,
        tier_mix=mix,
        seed=seed,
    )
    try:
        sim_config = SimConfig(
            replicas=replicas,
            router=router,
            num_blocks=kv_blocks,
            timing=timing_config,
            fleet=fleet,  # type: ignore[arg-type]  # pydantic rejects anything else, naming it
            slow_factor=slow_factor,
            fail_replica_at_s=fail_at,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    overrides: dict[str, Any] = {"budget": budget} if budget is not None else {}
    try:
        latency = load_latency_model(latency_model)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--latency-model") from None
    try:
        specs = build_workload(workload, tier_set)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--trace") from None
    if window_seconds is not None and specs:
        count = window_count(specs[-1].arrival_s - specs[0].arrival_s, window_seconds)
        if count > MAX_WINDOWS:
            raise typer.BadParameter(
                f"{window_seconds} s splits these arrivals into {count} windows "
                f"(at most {MAX_WINDOWS})", param_hint="--window-seconds"
            )
    progress = SimProgress(console.print, progress_every) if progress_every > 0 else None
    with console.status(f"simulating {len(specs)} requests under {policy}"):
        result = simulate(
            specs, tier_set, policy, sim_config, latency=latency, policy_config=overrides,
            monitor=progress, monitor_every_s=30.0,  # (a look settles fast-forwarded runs)
        )
    summary = summarize(result.records, tier_set)
    summary["sim"] = result.stats
    if window_seconds is not None:
        summary["windows"] = windows(result.records, tier_set, window_seconds)
    summary["timing"] = {"label": result.stats["timing"], **timing_config.model_dump(mode="json")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    config = {
        "policy": policy,
        "policy_config": overrides,
        "workload": workload.model_dump(mode="json"),
        "sim": sim_config.model_dump(mode="json"),
        "tiers": tier_set.to_dict(),
        "tiers_source": tier_set.source,
        "latency_model": describe_latency_model(latency_model),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    o = summary["overall"]
    console.print(
        f"{policy}: {o['requests']} requests, attainment {o['slo_attainment']}, "
        f"goodput {o['goodput_rps']} rps, p99 TTFT {o['ttft_s']['p99']} s, "
        f"timing {result.stats['timing']} "
        f"(simulated in {result.stats['sim_wall_s']:.1f} s) -> {out}/summary.json"
    )
    if window_seconds is not None:
        _print_windows(console, summary["windows"], list(tier_set))


def _print_windows(console: Console, rows: list[dict[str, Any]], tiers: list[str]) -> None:
    table = Table(title="by arrival window: requests, queue at its end, TTFT (s), on time")
    for col in ("from s", "n", "queue", "p50", "p99", "all", *tiers):
        table.add_column(col, justify="right")

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for w in rows:
        att = w["slo_attainment"]
        table.add_row(
            f"{w['start_s']:.0f}", str(w["requests"]), str(w["queued_at_end"]),
            fmt(w["ttft_s"]["p50"], ".2f"), fmt(w["ttft_s"]["p99"], ".2f"),
            fmt(att["overall"], ".3f"), *(fmt(att[t], ".3f") for t in tiers),
        )
    console.print(table)
