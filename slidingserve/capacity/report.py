"""Outputs of a capacity run: capacity.json, attainment.png and a rich table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def capacity_table(result: dict[str, Any], title: str = "Capacity under SLOs") -> Table:
    timing = result.get("timing")  # the simulator's step timing (slidingserve/sim/timing.py)
    table = Table(title=f"{title}, timing {timing}" if timing else title)
    table.add_column("policy", no_wrap=True)
    limit = result.get("throughput_limit")
    columns = ["capacity (1%)", "spread", "capacity (90%)", "budget", "trials"]
    for col in [*columns, *(["of limit"] if limit else [])]:
        table.add_column(col, justify="right")
    rows = {**result["policies"], **result.get("ablation", {})}
    for label, r in sorted(rows.items(), key=lambda kv: -kv[1]["capacity_rps"]):
        sp = r["spread"]["capacity_rps"]
        extra = [f"{r.get('fraction_of_limit', 0.0):.0%}"] if limit else []
        table.add_row(
            label,
            f"{r['capacity_rps']:.2f} rps",
            f"{sp['min']:.2f}-{sp['max']:.2f}",
            "-" if r["capacity_rps_90"] is None else f"{r['capacity_rps_90']:.2f} rps",
            "-" if r["budget"] is None else str(r["budget"]),
            str(r["trials"]),
            *extra,
        )
    cmp = result.get("comparison") or {}
    if limit:
        table.caption = (
            f"throughput limit (no SLO, decodes-first at {limit['budget']} tokens): "
            f"{limit['rate_rps']:.2f} rps"
        )
    bound = result.get("step_rate_bound")
    if bound:
        table.caption = (table.caption + "\n" if table.caption else "") + (
            f"step-rate bound ({bound['tier']}'s {bound['tpot_s'] * 1e3:g} ms TPOT: "
            f">= {bound['steps_per_s']:.0f} steps/s of {bound['fixed_step_s'] * 1e3:.2f} ms "
            f"fixed each): {bound['rate_rps']:.2f} rps"
        )
    if cmp.get("capacity_ratio") is not None:
        table.caption = (table.caption + "\n" if table.caption else "") + (
            f"slidingserve / {cmp['best_baseline']}: {cmp['capacity_ratio']:.2f}x (1%)"
            + (f", / {cmp.get('best_baseline_90', cmp['best_baseline'])}: "
               f"{cmp['capacity_ratio_90']:.2f}x (90%)" if cmp.get("capacity_ratio_90") else "")
        )
        heavy = cmp.get("heavy_load")
        if heavy and heavy.get("violation_ratio") is not None:
            table.caption += (
                f"; at {heavy['multiple']}x {result['reference']}'s capacity "
                f"({heavy['rate']:.2f} rps) violations "
                + ", ".join(f"{k} {v:.1%}" for k, v in heavy["violation"].items())
            )
    return table


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(capacity_table(result))


def plot_attainment(result: dict[str, Any], path: Path) -> None:
    """Violation rate per tier (and overall) vs arrival rate, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = result["curve"]["lines"]
    tiers = list(dict.fromkeys(t for pts in lines.values() for p in pts for t in p["tiers"]))
    panels = [*tiers, "overall"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, pts in sorted(lines.items()):
            xs = [p["rate"] for p in pts]
            ys = [p["violation"] if panel == "overall" else p["tiers"].get(panel, 0.0) for p in pts]
            ax.plot(xs, ys, marker="o", label=label)
        ax.axhline(0.01, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(panel)
        ax.set_xlabel("arrival rate (requests/s)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("SLO violation rate")
    axes[0][-1].legend(fontsize=7)
    if not lines:
        axes[0][0].text(0.5, 0.5, "no load curve", ha="center", transform=axes[0][0].transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fleet_table(result: dict[str, Any]) -> Table:
    """Fleet mode (capacity/fleet.py): capacity per router and replica count."""
    fleet = result["fleet"] + (
        f" (slow x{result['slow_factor']:g})" if result.get("slow_factor") else ""
    )
    table = Table(title=f"Capacity of {result['policy']} per router, {fleet} fleet")
    table.add_column("router", no_wrap=True)
    for col in ["replicas", "capacity (1%)", "capacity (90%)", "per replica", "efficiency",
                "trials", "search"]:
        table.add_column(col, justify="right")
    for router, r in result["routers"].items():
        for n, c in r["by_replicas"].items():
            eff = c["scaling_efficiency"]
            table.add_row(
                router,
                n,
                f"{c['capacity_rps']:.2f} rps",
                "-" if c["capacity_rps_90"] is None else f"{c['capacity_rps_90']:.2f} rps",
                f"{c['capacity_per_replica']:.2f} rps",
                "-" if eff is None else f"{eff:.0%}",
                str(c["trials"]),
                f"{c['search_wall_s']:.0f} s",
            )
    return table


def plot_routers(result: dict[str, Any], path: Path) -> None:
    """Capacity per replica vs replicas, one line per router (left); capacity at the main
    fleet size per router (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routers = result["routers"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for router, r in routers.items():
        ns = [int(n) for n in r["by_replicas"]]
        left.plot(ns, [c["capacity_per_replica"] for c in r["by_replicas"].values()],
                  marker="o", label=router)
    counts = sorted({int(n) for r in routers.values() for n in r["by_replicas"]})
    left.set_xscale("log", base=2)
    left.set_xticks(counts, [str(n) for n in counts])
    left.set_xlabel("replicas")
    left.set_ylabel("capacity per replica (requests/s, 1%)")
    left.set_title(f"{result['policy']}, {result['fleet']} fleet")
    left.legend(fontsize=7)
    names = list(routers)
    right.bar(names, [routers[x]["capacity_rps"] for x in names], color="tab:blue",
              label="1% worst tier")
    if any(routers[x]["capacity_rps_90"] is not None for x in names):
        right.bar(names, [routers[x]["capacity_rps_90"] or 0.0 for x in names], color="none",
                  edgecolor="black", label="90% overall")
    right.set_ylabel(f"capacity at {result['replicas']} replicas (requests/s)")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
