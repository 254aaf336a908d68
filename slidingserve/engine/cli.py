"""``slidingserve bench engine``: the real-engine comparison (see ``slidingserve.engine.bench``).

Examples::

    slidingserve bench engine --trace ../shared/traces/azure_llm_2023_conv.csv --rate 2 \\
        --duration 60 --scheduler slidingserve,vllm-default,vllm-priority,qoserve --out DIR
    slidingserve bench engine --trace ... --find-capacity --rates 6,9,12 --seeds 0,1,2 \\
        --scheduler slidingserve,vllm-default --out DIR
    slidingserve bench engine --trace ... --find-capacity --start-rate 1 \\
        --scheduler slidingserve,qoserve,vllm-default --out DIR
    slidingserve bench engine --repredict --out DIR \
        --variant 'greedy=slidingserve:{"use_sliding_chunker": false}'

Progress goes to stderr, a line as each trial (scheduler, rate, workload seed) starts and ends,
with the elapsed time and an ETA.

vLLM spawns processes: the console script's entry point is guarded, and this module never
imports vLLM at import time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

VLLM_OWN_NAMES = ("vllm-default", "vllm-priority")


def echo_variants(rows: list[dict[str, Any]]) -> None:
    """``--repredict --variant``'s table: per rate, the measured scheduler's prediction first,
    then each variant's, with per-tier attainment."""
    typer.echo(f"{'label':<16s} {'rate':>6s} {'measured':>8s} {'predicted':>9s}  per tier")
    for r in rows:
        measured = "" if r["measured"] is None else f"{r['measured']:.3f}"
        tiers = " / ".join(f"{k} {v:.2f}" for k, v in r["tiers"].items() if v is not None)
        typer.echo(f"{r['label']:<16s} {r['rate_rps']:6.2f} {measured:>8s} "
                   f"{r['slo_attainment']:9.3f}  {tiers}")


def parse_variant(text: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``LABEL=POLICY:{json overrides}``, e.g.
    ``ss-floor=slidingserve:{"chunker": {"min_chunk": 128}}``."""
    from slidingserve.policy.base import policy_names

    label, sep, rest = text.partition("=")
    name, _, raw = rest.partition(":")
    label, name = label.strip(), name.strip()
    if not sep or not label or not name:
        raise ValueError(f"--variant: expected LABEL=POLICY[:JSON] (got {text!r})")
    if name not in policy_names():
        raise ValueError(f"--variant {label}: unknown policy {name!r}")
    try:
        overrides = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--variant {label}: overrides are not JSON ({e})") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"--variant {label}: overrides must be a JSON object (got {raw!r})")
    return label, (name, overrides)


def parse_schedulers(text: str, variants: Iterable[str] = ()) -> list[str]:
    """Comma-separated scheduler names, each vLLM's own or a registered policy.

    ``vllm-default``/``vllm-priority`` always mean vLLM's own scheduler, untouched (the policy
    registry's ``vllm-priority`` re-implementation is for the simulator).
    """
    from slidingserve.policy.base import policy_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--scheduler: no scheduler named (got {text!r})")
    known = [*VLLM_OWN_NAMES, *(p for p in policy_names() if p not in VLLM_OWN_NAMES),
             *variants]
    for n in names:
        if n not in known:
            raise ValueError(f"--scheduler: unknown scheduler {n!r} (known: {', '.join(known)})")
    if len(set(names)) != len(names):
        raise ValueError(f"--scheduler: a scheduler is named twice (got {text!r})")
    return names


def parse_rates(text: str) -> list[float]:
    """Comma-separated positive arrival rates, e.g. ``3,4,5.5``."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--rates: not a comma-separated list of numbers (got {text!r})") \
            from None
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--rates: need one or more rates > 0 (got {text!r})")
    return sorted(set(rates))


def parse_seeds(text: str) -> tuple[int, ...]:
    """Comma-separated distinct non-negative integers, e.g. ``0,1,2``."""
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--seeds: not a comma-separated list of integers (got {text!r})") \
            from None
    if not seeds or any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: need distinct integers >= 0 (got {text!r})")
    return seeds


def echo_predictions(policies: dict[str, Any]) -> None:
    """Measured and predicted attainment of every trial of a capacity run, the error, and the
    preemptions measured / predicted (``-`` where a run did not record them), and the seconds
    the trial's engine spent in slow spells (``sim_timing.step_fit``; ``-``: not fitted)."""
    errors = []
    typer.echo(f"{'scheduler':15s} {'rate':>6s} {'measured':>9s} {'predicted':>9s} {'error':>6s}"
               f" {'preempted':>11s} {'spells':>7s}  timing")
    for name, r in policies.items():
        for rate, t in sorted(r["trials"].items(), key=lambda kv: float(kv[0])):
            sim = t.get("simulated") or {}
            if sim.get("slo_attainment") is None:
                continue
            err = 100 * (t["attainment"] - sim["slo_attainment"])
            errors.append(abs(err))
            measured = (t.get("scheduler_overhead") or {}).get("preempted")
            predicted = sim.get("preemptions")
            preempted = (f"{'-' if measured is None else int(measured)}/"
                         f"{'-' if predicted is None else round(predicted)}")
            spell = (sim.get("measured_noise") or t.get("step_fit") or {}).get("slow_spell_s")
            spells = "-" if spell is None else f"{spell:.2f}s"
            typer.echo(f"{name:15s} {float(rate):6.2f} {t['attainment']:9.3f} "
                       f"{sim['slo_attainment']:9.3f} {err:+6.1f} {preempted:>11s} {spells:>7s}"
                       f"  {sim.get('timing', '')}")
    if errors:
        within = sum(e <= 5.0 for e in errors)
        typer.echo(f"mean |error| {sum(errors) / len(errors):.1f} points; {within} of "
                   f"{len(errors)} within 5 points")


def echo_limit(data: dict[str, Any]) -> None:
    """The engine's throughput limit (``predict.throughput_limit``) and each scheduler's 90%
    capacity as a share of it."""
    limit = data.get("throughput_limit") or {}
    rate = limit.get("rate_rps") or 0.0
    if rate <= 0:
        return
    shares = ", ".join(f"{name} {p['capacity_rps_90'] / rate:.0%}"
                       for name, p in data["policies"].items())
    typer.echo(f"throughput limit (simulator, no SLO, decodes-first at {limit['budget']} "
               f"tokens, step timing of {limit['timing_of']} at {limit['timing_rate_rps']:g} "
               f"rps): {rate:.2f} rps; 90% capacity as a share of it: {shares}")


def echo_spread(out: Path, reference: str | None = None) -> None:
    """Write and print the seed bootstrap of the capacity run in ``out`` (``reference``: the
    scheduler compared with the others; None: ``spread``'s choice)."""
    from slidingserve.engine.spread import format_spread, spread, write_spread

    result = spread(out, reference)
    for line in format_spread(result):
        typer.echo(line)
    typer.echo(f"wrote {write_spread(out, result)}")


def bench_engine(
    scheduler: str = typer.Option("slidingserve", help="Scheduler(s), comma-separated."),
    trace: Path | None = typer.Option(None, help="Azure-format trace CSV (None: synthetic)."),
    rate: float | None = typer.Option(None, help="Arrival rate (requests/s)."),
    duration: float = typer.Option(60.0, help="Seconds of arrivals per trial."),
    drain: float = typer.Option(60.0, help="Seconds allowed after the last arrival."),
    out: Path = typer.Option(Path("results/bench_engine"), help="Output folder."),
    find_capacity: bool = typer.Option(False, "--find-capacity", help="Search each capacity."),
    start_rate: float = typer.Option(1.0, help="First rate of the capacity search."),
    rates: str | None = typer.Option(None, help="With --find-capacity: sweep these rates "
                                     "(comma-separated) instead of bisecting."),
    calibration: Path | None = typer.Option(None, help="Reuse a calibration.json."),
    latency_model: Path | None = typer.Option(None, help="In-engine latency model dir."),
    seed: int = typer.Option(0, help="Engine and workload seed."),
    seeds: str | None = typer.Option(None, help="Workload seeds, comma-separated: every "
                                     "trial runs one workload per seed and pools them."),
    max_num_batched_tokens: int = typer.Option(512, help="Engine token budget per step."),
    variant: list[str] | None = typer.Option(None, help="LABEL=POLICY:{json overrides}, a "
                                             "named policy variant usable in --scheduler."),
    sim_timing: str = typer.Option("measured-workload", help="The simulator's step timing "
                                   "in its predictions: measured (this run's step-time noise "
                                   "and planning time), measured-trial (each trial's own "
                                   "step-time ratio, noise, noise correlation and planning "
                                   "time), measured-workload (the same for each workload of a "
                                   "trial) or oracle (the latency model's)."),
    sim_plan_time: str = typer.Option("sched", help="With --sim-timing measured*, the "
                                      "planning time per step: sched (all of schedule(), "
                                      "wall), plan, plan-cpu, none, or cycle (measured-trial "
                                      "or -workload only: everything per step outside the "
                                      "model)."),
    sim_planner_correction: float = typer.Option(
        0.95, help="With --sim-timing measured*, the decay of the simulated planner's online "
        "correction of its latency model, as the adapter's latency_correction_decay; 0 plans "
        "with the median correction measured while serving, fixed."),
    sim_spells: bool = typer.Option(True, "--sim-spells/--no-sim-spells", help="With "
                                    "--sim-timing measured-trial or -workload, simulate the "
                                    "slow spells found in each trial's steps as spells "
                                    "(else as part of the noise)."),
    repredict: bool = typer.Option(False, "--repredict", help="Run no engine: recompute the "
                                   "simulator's predictions of the finished --find-capacity "
                                   "run in --out with --sim-timing / --sim-plan-time; "
                                   "with --variant, simulate those policies on the measured "
                                   "timing of the first --scheduler's trials instead."),
    spread: bool = typer.Option(False, "--spread", help="Run no engine: the seed bootstrap "
                                "of the finished --find-capacity run in --out (its "
                                "capacities and the first --scheduler's ratio to the best "
                                "other one, with 90% intervals); writes spread.json. A run "
                                "with two or more --seeds writes it when it ends."),
) -> None:
    """Open-loop workload through an in-process AsyncLLM; writes summary.json / capacity.json."""
    from slidingserve.engine.bench import compare, trials_planned
    from slidingserve.engine.bench import find_capacity as search
    from slidingserve.engine.bench_config import BenchConfig, Calibration
    from slidingserve.engine.predict import predict_variants
    from slidingserve.engine.predict import repredict as recompute
    from slidingserve.engine.progress import TrialProgress

    if spread:
        echo_spread(out, scheduler.split(",")[0].strip())
        return
    if not 0 <= sim_planner_correction < 1:
        raise ValueError("--sim-planner-correction must be in [0, 1) "
                         f"(got {sim_planner_correction!r})")
    if repredict:
        if sim_timing not in ("oracle", "measured", "measured-trial", "measured-workload"):
            raise ValueError(f"--sim-timing: {sim_timing!r} is not oracle, measured, "
                             "measured-trial or measured-workload")
        if sim_plan_time not in ("sched", "plan", "plan-cpu", "none", "cycle"):
            raise ValueError(f"--sim-plan-time: {sim_plan_time!r} is not sched, plan, "
                             "plan-cpu, none or cycle")
        if variant:
            table = predict_variants(out, dict(parse_variant(v) for v in variant),
                                     scheduler.split(",")[0].strip(),
                                     sim_planner_correction, sim_spells)
            echo_variants(table["rows"])
            typer.echo(f"wrote {out / 'variants.json'}")
            return
        data = asyncio.run(recompute(out, sim_timing, sim_plan_time, start_rate,
                                     planner_correction=sim_planner_correction,
                                     spells=sim_spells))
        echo_predictions(data["policies"])
        echo_limit(data)
        typer.echo(f"wrote {out / 'capacity.json'}")
        return

    variants = dict(parse_variant(v) for v in variant or [])
    names = parse_schedulers(scheduler, variants)
    if trace is not None and not trace.is_file():
        raise ValueError(f"--trace: file {str(trace)!r} does not exist")
    if not find_capacity and (rate is None or rate <= 0):
        raise ValueError(f"--rate must be > 0 unless --find-capacity (got {rate!r})")
    try:
        cfg = BenchConfig(trace=trace, duration_s=duration, drain_s=drain, seed=seed,
                          workload_seeds=parse_seeds(seeds) if seeds is not None else (),
                          latency_model=latency_model,
                          max_num_batched_tokens=max_num_batched_tokens, variants=variants,
                          # pydantic rejects other values, naming the field and value
                          sim_timing=sim_timing,  # type: ignore[arg-type]
                          sim_plan_time=sim_plan_time,  # type: ignore[arg-type]
                          sim_planner_correction=sim_planner_correction,
                          sim_spells=sim_spells)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"bench engine: {'.'.join(map(str, err['loc']))}: {err['msg']} "
                         f"(got {err.get('input')!r})") from None
    calib = None
    if calibration is not None:
        calib = Calibration(**json.loads(calibration.read_text()))
    sweep = parse_rates(rates) if find_capacity and rates is not None else None
    total, upper = trials_planned(cfg, len(names), find_capacity, sweep)
    progress = TrialProgress(total, lambda line: typer.echo(f"bench engine: {line}", err=True),
                             upper_bound=upper)
    if find_capacity:
        result = asyncio.run(search(cfg, names, out, start_rate, calib, rates=sweep,
                                    progress=progress))
        echo_predictions(result["policies"])
        for name, r in result["policies"].items():
            sim = r.get("simulated", {})
            typer.echo(f"{name:15s} capacity (worst tier <= 1% violations) "
                       f"{r['capacity_rps']:.2f} rps, (>= 90% attainment) "
                       f"{r['capacity_rps_90']:.2f} rps; simulator predicts "
                       f"{sim.get('capacity_rps', float('nan')):.2f} / "
                       f"{sim.get('capacity_rps_90', float('nan')):.2f} rps")
        echo_limit(result)
        typer.echo(f"wrote {out / 'capacity.json'}")
        if len(cfg.trial_seeds()) >= 2:
            echo_spread(out)
        return
    assert rate is not None
    results = asyncio.run(compare(cfg, names, rate, out, calib, progress))
    for name, s in results.items():
        ov = s["scheduler_overhead"]
        ovs = ("n/a (vLLM's own)" if ov is None else
               f"plan {ov['plan_ms']['p50']:.3f} ms p50 / {ov['plan_ms']['mean']:.3f} mean "
               f"(CPU {ov['plan_cpu_ms']['mean']:.3f} mean), {100 * ov['plan_share']:.2f}% of "
               f"step time ({100 * ov['sched_share']:.2f}% with all of schedule())")
        tiers = ", ".join(f"{t}: {g['slo_attainment']:.2f}" for t, g in s["tiers"].items()
                          if g["requests"])
        sim = s.get("simulated", {}).get("slo_attainment", float("nan"))
        timing = s.get("simulated", {}).get("timing", "-")
        typer.echo(f"{name:15s} rate {rate:.2f} attainment {s['overall']['slo_attainment']:.3f}"
                   f" ({tiers}; simulator predicts {sim:.3f}, timing {timing}); overhead {ovs}")
    typer.echo(f"wrote {out}")


def bench_prefix(
    conversations: int = typer.Option(8, help="Chats, started --start-gap seconds apart."),
    turns: int = typer.Option(4, help="Turns per chat (each sends the whole history)."),
    system_tokens: int = typer.Option(512, help="System prompt every chat shares."),
    user_tokens: int = typer.Option(64, help="New user tokens per turn."),
    output_tokens: int = typer.Option(32, help="Answer tokens per turn."),
    start_gap: float = typer.Option(0.5, help="Seconds between chat starts."),
    think: float = typer.Option(0.2, help="Seconds between an answer and the next turn."),
    policy: str = typer.Option("slidingserve", help="Policy the SlidingServe scheduler runs."),
    seed: int = typer.Option(0, help="Engine and workload seed."),
    out: Path = typer.Option(Path("results/bench_prefix"), help="Output folder."),
) -> None:
    """TTFT with and without vLLM's prefix caching on multi-turn chats (``engine.prefix_bench``).
    """
    from slidingserve.engine.prefix_bench import PrefixBenchConfig, compare

    try:
        cfg = PrefixBenchConfig(
            conversations=conversations, turns=turns, system_tokens=system_tokens,
            user_tokens=user_tokens, output_tokens=output_tokens, start_gap_s=start_gap,
            think_s=think, policy=policy, seed=seed)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"bench prefix: {'.'.join(map(str, err['loc']))}: {err['msg']} "
                         f"(got {err.get('input')!r})") from None
    result = asyncio.run(compare(cfg, out))
    for name in ("no_prefix_caching", "prefix_caching"):
        s = result[name]["summary"]
        typer.echo(f"{name:18s} {s['requests']} turns: TTFT p50 {s['ttft_p50_ms']:.1f} ms, "
                   f"p99 {s['ttft_p99_ms']:.1f} ms, mean {s['ttft_mean_ms']:.1f} ms; "
                   f"{100 * s['cached_token_share']:.1f}% of prompt tokens from the cache")
    typer.echo(f"wrote {out / 'prefix.json'}")


if __name__ == "__main__":  # python -m slidingserve.engine.cli (vLLM spawns: keep this guard)
    typer.run(bench_engine)
