"""``slidingserve capacity`` and ``slidingserve run`` (the quick comparison behind ``make run``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slidingserve.capacity.config import (
    DEFAULT_TRIAL_SECONDS,
    CapacityConfig,
    Contender,
    ablation_contenders,
)
from slidingserve.capacity.fleet import run_fleet_capacity
from slidingserve.capacity.harness import run_capacity
from slidingserve.capacity.protocol import QOSERVE_NUM_REQUESTS, qoserve_capacity_config
from slidingserve.capacity.regime_map import (
    AXES,
    H100_MEASURED,
    MapAxes,
    MapCell,
    MapSearch,
    map_cells,
    map_table,
    parse_map_axes,
    plot_map,
    run_map,
)
from slidingserve.capacity.report import (
    fleet_table,
    plot_attainment,
    plot_routers,
    print_table,
    write_json,
)
from slidingserve.latency import load_latency_model
from slidingserve.policy import policy_names
from slidingserve.sim import SimConfig, router_names
from slidingserve.sim.config import TimingConfig
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
from slidingserve.sim.timing import timing_from_options
from slidingserve.slo import load_tiers
from slidingserve.workload import parse_tier_mix


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    known = policy_names()
    for name in names:
        if name not in known:
            raise typer.BadParameter(f"unknown policy {name!r} (known: {', '.join(known)})")
    if not names:
        raise typer.BadParameter(f"no policy given (got {text!r})")
    return names


def parse_contender(text: str) -> Contender:
    """``LABEL=POLICY:{json overrides}``, e.g. ``ss-w1=slidingserve:{"chunker": {"window": 1}}``."""
    label, sep, rest = text.partition("=")
    name, _, raw = rest.partition(":")
    if not sep or not label.strip() or not name.strip():
        raise typer.BadParameter(f"--contender: expected LABEL=POLICY[:JSON] (got {text!r})")
    parse_policies(name)
    try:
        overrides = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"--contender {label}: overrides are not JSON ({e})") from None
    if not isinstance(overrides, dict):
        raise typer.BadParameter(f"--contender {label}: overrides must be a JSON object")
    return Contender(label=label.strip(), policy=name.strip(), overrides=overrides)


def parse_budgets(text: str) -> list[int]:
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise typer.BadParameter(f"budget {item!r} is not an integer") from None
        if value < 1:
            raise typer.BadParameter(f"budget must be >= 1 token (got {value})")
        out.append(value)
    return out


DEFAULT_POLICIES = "slidingserve,qoserve,sarathi,vllm-fcfs,vllm-priority,edf"
DEFAULT_BUDGETS = "256,512,1024,2048,4096,8192"
# The map's policies: SlidingServe and the baselines that led some earlier table (edf and
# vllm-fcfs never did); --policies overrides.
MAP_POLICIES = "slidingserve,qoserve,sarathi,vllm-priority"
DEFAULT_CURVE = "0.6,0.8,1.0,1.15,1.3,1.5"


def _points(curve: str) -> list[float]:
    try:
        return [float(x) for x in curve.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--curve: not a list of numbers (got {curve!r})") from None


def _contenders(policies: str, contender: list[str] | None) -> list[Contender]:
    names = parse_policies(policies) if policies.strip() else []
    extra = [parse_contender(c) for c in contender or []]
    if not names and not extra:
        raise typer.BadParameter("no policy given (--policies or --contender)")
    return [*(Contender(label=n, policy=n) for n in names), *extra]


def with_progress(
    console: Console, run: Callable[[Callable[[int, int, str], None]], dict[str, Any]]
) -> dict[str, Any]:
    """``run(report)`` with one progress bar per phase (a report's message up to its colon)."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(done: int, total: int, message: str) -> None:
            phase = message.split(":")[0]
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=max(total, 1))
            progress.update(tasks[phase], completed=done if total else 1, description=message)

        return run(report)


def execute(
    config: CapacityConfig, out: Path, console: Console, timing: TimingConfig | None = None
) -> dict[str, Any]:
    """Run a capacity comparison with progress bars; write capacity.json and attainment.png.
    ``timing``: the simulator's step timing for every trial (default: ``config.sim``'s)."""
    if timing is not None:
        config = config.model_copy(update={"sim": config.sim.model_copy(update={"timing": timing})})
    result = with_progress(console, lambda report: run_capacity(config, report))
    result["timing"] = config.sim.timing.label()
    write_json(out / "capacity.json", result)
    plot_attainment(result, out / "attainment.png")
    print_table(result, console)
    console.print(
        f"wrote {out / 'capacity.json'} and {out / 'attainment.png'} in {result['wall_s']:.0f} s"
    )
    return result


def execute_fleet(
    config: CapacityConfig, out: Path, console: Console, timing: TimingConfig | None = None
) -> dict[str, Any]:
    """Fleet mode: capacity per router and replica count; capacity.json and routers.png."""
    if timing is not None:
        config = config.model_copy(update={"sim": config.sim.model_copy(update={"timing": timing})})
    result = with_progress(console, lambda report: run_fleet_capacity(config, report))
    result["timing"] = config.sim.timing.label()
    write_json(out / "capacity.json", result)
    plot_routers(result, out / "routers.png")
    console.print(fleet_table(result))
    console.print(
        f"wrote {out / 'capacity.json'} and {out / 'routers.png'} in {result['wall_s']:.0f} s"
    )
    return result


def parse_replicas(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise typer.BadParameter(f"not a list of integers (got {text!r})",
                                 param_hint="--replicas") from None
    if not counts or counts[0] < 1:
        raise typer.BadParameter(f"replica counts must be >= 1 (got {text!r})",
                                 param_hint="--replicas")
    return counts


def parse_routers(text: str) -> list[str]:
    names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    known = router_names()
    for name in names:
        if name not in known:
            raise typer.BadParameter(f"unknown router {name!r} (known: {', '.join(known)})",
                                     param_hint="--routers")
    if not names:
        raise typer.BadParameter(f"no router given (got {text!r})", param_hint="--routers")
    return names


def capacity(
    out: Annotated[Path, typer.Option(help="Output folder (capacity.json, attainment.png).")],
    trace: Annotated[
        Path | None, typer.Option(help="Trace CSV for lengths (default: synthetic).")
    ] = None,
    policies: Annotated[
        str, typer.Option(help="Comma-separated policy names.")
    ] = DEFAULT_POLICIES,
    replicas: Annotated[
        str, typer.Option(help="Replicas behind the router; with --routers a list, e.g. 1,4,16.")
    ] = "1",
    router: Annotated[str, typer.Option(help="Router for several replicas.")] = "round-robin",
    routers: Annotated[
        str | None,
        typer.Option(help="Fleet mode: the first policy's capacity per router, e.g. "
                     "round-robin,pow2,least-work,slack (capacity.json 'routers', routers.png)."),
    ] = None,
    fleet: Annotated[
        str, typer.Option(help="homogeneous | heterogeneous (odd replicas --slow-factor x slower).")
    ] = "homogeneous",
    slow_factor: Annotated[float, typer.Option(help="Heterogeneous fleet: slowdown.")] = 2.0,
    fail_at: Annotated[
        float | None, typer.Option(help="Replica 0 fails at this time (s) of each trial.")
    ] = None,
    criterion_90: Annotated[
        bool, typer.Option(help="--routers: also search the 90% criterion (the slow part).")
    ] = True,
    arrival: Annotated[str, typer.Option(help="poisson | gamma (bursts, with --cv).")] = "poisson",
    cv: Annotated[float, typer.Option(help="Gamma arrivals: CV of the gaps.")] = 1.0,
    tiers: Annotated[Path | None, typer.Option(help="SLO tier file.")] = None,
    tier_mix: Annotated[
        str | None, typer.Option(help="e.g. interactive=0.2,standard=0.5,batch=0.3")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per policy (spread reported).")] = 3,
    budgets: Annotated[
        str, typer.Option(help="Budgets swept for fixed-budget baselines.")
    ] = DEFAULT_BUDGETS,
    ablation: Annotated[
        bool, typer.Option(help="Also run SlidingServe with each part off.")
    ] = False,
    ablation_seeds: Annotated[int | None, typer.Option(help="Seeds for ablation variants.")] = None,
    trial_seconds: Annotated[
        float,
        typer.Option(help="Measured window per trial (s of arrivals). Shorter windows "
                     "overrate a policy whose queue builds slowly near its throughput limit "
                     "(docs/results.md, trial length); the map defaults to 60."),
    ] = DEFAULT_TRIAL_SECONDS,
    warmup_seconds: Annotated[
        float, typer.Option(help="Warm-up arrivals before the window (s).")
    ] = 30.0,
    horizon_seconds: Annotated[
        float, typer.Option(help="From this long after the window, overloaded trials are cut.")
    ] = 120.0,
    early_pass: Annotated[
        bool,
        typer.Option(help="Stop a trial once it passes for sure (after the horizon); "
                     "--no-early-pass follows every deferred request to its deadline."),
    ] = True,
    min_requests: Annotated[int, typer.Option(help="Least measured requests per trial.")] = 1000,
    rel_tol: Annotated[float, typer.Option(help="Bisection tolerance (relative).")] = 0.04,
    sweep_rel_tol: Annotated[float, typer.Option(help="Tolerance in the budget sweep.")] = 0.08,
    start_rate: Annotated[
        float | None, typer.Option(help="First rate tried (default: estimated).")
    ] = None,
    curve: Annotated[
        str, typer.Option(help="Load-curve points, multiples of the reference capacity.")
    ] = DEFAULT_CURVE,
    workers: Annotated[int, typer.Option(help="Worker processes (this machine: at most 2).")] = 2,
    kv_blocks: Annotated[int | None, typer.Option(help="KV blocks per replica.")] = None,
    contender: Annotated[
        list[str] | None,
        typer.Option(help="Extra line LABEL=POLICY:{json overrides} (repeatable)."),
    ] = None,
    latency_model: LatencyModelOption = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="steady-state (default) or qoserve: QoServe's published capacity experiment "
            "(18,000 requests to completion, its tiers, its A100 step model; runs fcfs-256, "
            "edf-256, qoserve-paper and slidingserve unless --policies/--contender are given)."
        ),
    ] = "steady-state",
    physical_limit: Annotated[
        bool,
        typer.Option(help="Also measure the throughput limit (no SLO) printed beside the table."),
    ] = True,
    published_rates: Annotated[
        bool,
        typer.Option(help="--protocol qoserve: test the QPS the published experiment tested "
                     "per scheduler and interpolate (instead of bisecting)."),
    ] = False,
    protocol_requests: Annotated[
        int, typer.Option(help="--protocol qoserve: requests per trial.")
    ] = QOSERVE_NUM_REQUESTS,
    timing: TimingOption = "oracle",
    timing_seed: TimingSeedOption = 0,
    noise_sigma: NoiseSigmaOption = None,
    replay: ReplayOption = None,
    plan_time_ms: PlanTimeOption = None,
    spells: SpellsOption = None,
    planner_correction: PlannerCorrectionOption = 0.0,
    slo_scale: Annotated[
        float, typer.Option(help="Multiply every latency target of the tiers (SLO scale).")
    ] = 1.0,
    map_: Annotated[
        bool,
        typer.Option(
            "--map",
            help="The regime map: capacity per policy across SLO scale, burstiness, tier mix, "
            "latency and timing models, protocol and traces (DIR/map.json, DIR/map.png). "
            "Search options left at their defaults take the map's coarser ones.",
        ),
    ] = False,
    map_axes: Annotated[
        list[str] | None,
        typer.Option(help="--map: narrow an axis, NAME=V1,V2 (repeatable), e.g. slo_scale=0.5,1; "
                     "names: " + ", ".join(AXES) + "."),
    ] = None,
    map_grid: Annotated[
        str,
        typer.Option(help="--map: star (one axis moved at a time) or full (every combination)."),
    ] = "star",
) -> None:
    """Highest Poisson rate per policy meeting the SLOs (1% worst tier; 90% overall)."""
    console = Console()
    if map_:
        axis_options = {
            "--latency-model": latency_model is not None, "--timing": timing != "oracle",
            "--slo-scale": slo_scale != 1.0, "--arrival": arrival != "poisson",
            "--tier-mix": tier_mix is not None, "--protocol": protocol != "steady-state",
        }
        axes_given = [name for name, set_ in axis_options.items() if set_]
        if axes_given:
            raise typer.BadParameter(
                f"{axes_given[0]} is an axis of the map: set it with --map-axes (e.g. "
                "--map-axes latency_model=qoserve-a100)", param_hint="--map"
            )
        settings = MapSearch(
            policies=policies if policies != DEFAULT_POLICIES else MAP_POLICIES,
            seeds=seeds if seeds != 3 else 1,
            budgets=budgets if budgets != DEFAULT_BUDGETS else "512,1024,2048",
            trial_seconds=trial_seconds if trial_seconds != DEFAULT_TRIAL_SECONDS else 60.0,
            warmup_seconds=warmup_seconds,
            horizon_seconds=horizon_seconds if horizon_seconds != 120.0 else 60.0,
            min_requests=min_requests if min_requests != 1000 else 600,
            rel_tol=rel_tol if rel_tol != 0.04 else 0.08,
            sweep_rel_tol=sweep_rel_tol if sweep_rel_tol != 0.08 else 0.15,
            protocol_requests=protocol_requests,
            replicas=parse_replicas(replicas)[-1],
            router=router,
            tiers=str(tiers) if tiers else None,
        )
        run_regime_map(settings, trace, out, map_axes or [], map_grid, workers, console)
        return
    if protocol == "qoserve" and (slo_scale != 1.0 or arrival != "poisson"):
        raise typer.BadParameter(
            "--protocol qoserve fixes its tiers and Poisson arrivals (drop --slo-scale and "
            "--arrival)"
        )
    try:
        timing_config = timing_from_options(timing, timing_seed, noise_sigma, replay, plan_time_ms,
                                            spells, planner_correction)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if latency_model is not None:
        try:
            load_latency_model(latency_model)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--latency-model") from None
    if protocol == "qoserve":
        given = policies != DEFAULT_POLICIES or contender
        config = qoserve_capacity_config(
            trace,
            contenders=_contenders(policies, contender) if given else None,
            seeds=seeds,
            num_requests=protocol_requests,
            workers=workers,
            latency_model=latency_model or "qoserve-a100",
            curve_points=_points(curve) if curve != DEFAULT_CURVE else (1.0, 1.3),
            published_rates=published_rates,
        ).model_copy(update={"physical_limit": physical_limit})
        execute(config, out, console, timing_config)
        return
    if protocol != "steady-state":
        raise typer.BadParameter(
            f"unknown protocol {protocol!r} (known: steady-state, qoserve)", param_hint="--protocol"
        )
    contenders = _contenders(policies, contender)
    counts = parse_replicas(replicas)
    if len(counts) > 1 and routers is None:
        raise typer.BadParameter(
            "a list of replica counts needs --routers", param_hint="--replicas"
        )
    try:
        sim = SimConfig(
            replicas=counts[-1],
            router=router,
            num_blocks=kv_blocks,
            fleet=fleet,  # type: ignore[arg-type]  # pydantic rejects anything else, naming it
            slow_factor=slow_factor,
            fail_replica_at_s=fail_at,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    tier_set = load_tiers(tiers)
    points = _points(curve)
    abl = ablation_contenders() if ablation else []
    config = CapacityConfig(
        contenders=contenders,
        ablation=abl,
        latency_model=latency_model,
        ablation_seeds=ablation_seeds,
        trace=trace,
        tiers=tiers,
        tier_mix=parse_tier_mix(tier_mix, tier_set) if tier_mix is not None else None,
        slo_scale=slo_scale,
        sim=sim,
        arrival=arrival,  # type: ignore[arg-type]  # pydantic rejects anything else, naming it
        cv=cv,
        routers=parse_routers(routers) if routers is not None else [],
        fleet_replicas=counts if routers is not None else [],
        criterion_90=criterion_90,
        seeds=seeds,
        budgets=parse_budgets(budgets),
        trial_seconds=trial_seconds,
        warmup_seconds=warmup_seconds,
        horizon_seconds=horizon_seconds,
        early_pass=early_pass,
        min_requests=min_requests,
        rel_tol=rel_tol,
        sweep_rel_tol=sweep_rel_tol,
        start_rate=start_rate,
        curve_points=points,
        heavy_load=1.3 if 1.3 in points else (points[-1] if points else 1.3),
        workers=workers,
        physical_limit=physical_limit,
    )
    if config.routers:
        execute_fleet(config, out, console, timing_config)
        return
    execute(config, out, console, timing_config)


def run_regime_map(
    settings: MapSearch,
    trace: Path | None,
    out: Path,
    axes: list[str],
    grid: str,
    workers: int,
    console: Console,
) -> None:
    """``capacity --map``: every cell's capacity search, then map.json, map.png and a table."""
    if grid not in ("star", "full"):
        raise typer.BadParameter(
            f"unknown grid {grid!r} (known: star, full)", param_hint="--map-grid"
        )
    try:
        parse_policies(settings.policies)
        parse_budgets(settings.budgets)
        map_axes = parse_map_axes(axes, MapAxes(trace=[str(trace) if trace else None]))
        for spec in map_axes.latency_model:
            if spec != H100_MEASURED:
                load_latency_model(spec)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    cells = map_cells(map_axes, grid)  # type: ignore[arg-type]
    console.print(
        f"regime map: {len(cells)} cells ({grid} grid); policies {settings.policies}; "
        f"{settings.seeds} seed(s), budgets {settings.budgets}, {settings.trial_seconds:g} s "
        f"trials, tolerance {settings.rel_tol:g} (sweep {settings.sweep_rel_tol:g})"
    )

    def on_cell(i: int, n: int, cell: MapCell, row: dict[str, Any] | None) -> None:
        if row is None:
            console.print(f"[{i + 1}/{n}] {cell.label()}: already in {out / 'map.json'}")
            return
        caps = ", ".join(
            f"{k} {v['capacity_rps']:.2f}/{v['capacity_rps_90'] or 0:.2f}"
            for k, v in row["policies"].items()
        )
        console.print(f"[{i + 1}/{n}] {cell.label()}: {caps} rps ({row['wall_s']:.0f} s)")

    rows = run_map(
        cells,
        lambda cell, latency: settings.cell_config(cell, latency, trace, workers),
        out,
        settings.model_dump(mode="json"),
        on_cell,
    )
    plot_map(rows, out / "map.png")
    console.print(map_table(rows))
    console.print(f"wrote {out / 'map.json'} and {out / 'map.png'}")


def run(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/quick"),
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Quick capacity comparison of every policy on the built-in synthetic workload."""
    console = Console()
    names = policy_names()
    config = CapacityConfig(
        contenders=[Contender(label=n, policy=n) for n in names],
        seeds=1,
        budgets=[2048],
        trial_seconds=15.0,
        warmup_seconds=5.0,
        horizon_seconds=15.0,
        min_requests=100,
        rel_tol=0.12,
        curve_points=[1.0, 1.3],
        workers=workers,
    )
    console.print(
        f"quick comparison of {', '.join(names)} on the synthetic workload: 15 s windows, "
        "1 seed, fixed budgets at 2048 (`slidingserve capacity` runs the full search)"
    )
    result = execute(config, out, console)
    console.print(json.dumps(result.get("comparison", {}), indent=None))
