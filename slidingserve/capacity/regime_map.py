"""The regime map (``slidingserve capacity --map``): capacity per policy across operating regimes.

A cell is one operating point: a trace, a latency model, a timing model, a trial protocol, an
SLO scale (every latency target of the tiers multiplied by it), the arrivals' burstiness (Gamma
CV; 1 is Poisson) and the share of the top tier's traffic. In each cell the capacity harness
(``harness.run_capacity``) finds every policy's highest rate with the worst tier at most 1%
late (``capacity_rps``) and with at least 90% of requests on time (``capacity_rps_90``).

Axes (``MapAxes``; ``--map-axes NAME=V1,V2`` narrows one) and their defaults, the first value
of each being the base:

* ``trace``: the ``--trace`` given (a list of paths through ``--map-axes trace=A,B``);
* ``latency_model``: ``roofline-h100``, ``h100-measured`` (LightGBM trained on the measured H100
  steps of ``predictor/data/h100/steps.csv``, built into ``DIR/models`` on first use),
  ``qoserve-a100``;
* ``timing``: ``oracle`` (steps take what the planning model predicts), ``noise`` (lognormal
  step noise, sigma fitted to measured repeats; ``slidingserve/sim/timing.py``);
* ``protocol``: ``steady-state`` (the default trials, ``trial.py``), ``qoserve`` (QoServe's
  published experiment, ``protocol.py``: its tiers, Poisson arrivals, its A100 step model; the
  SLO-scale, burstiness and tier-mix axes do not apply there and stay at their base values);
* ``slo_scale``: 1, 0.25, 0.5, 2;
* ``arrival_cv``: 1, 2, 4;
* ``interactive_share``: 0.2, 0.5, 0.8 of the requests in the top tier, the rest in the tier
  file's proportions (``default``: the file's own mix; the default tiers' is 0.2).

Grids: ``star`` (the default) is the base cell plus, per axis, each other value with every other
axis at its base (one axis moved at a time, as in DistServe's figures; 12 cells per trace by
default); ``full`` is the Cartesian product. Cells are written to ``map.json`` as they finish,
and a rerun with the same folder skips the cells already there (same policies and settings), so
a long map can be resumed.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.table import Table

from slidingserve.capacity.config import CapacityConfig, Contender
from slidingserve.capacity.harness import run_capacity
from slidingserve.capacity.protocol import qoserve_capacity_config
from slidingserve.sim import SimConfig
from slidingserve.sim.config import TimingConfig
from slidingserve.sim.timing import timing_from_options
from slidingserve.slo import load_tiers, scale_tiers
from slidingserve.workload import top_tier_mix

H100_MEASURED = "h100-measured"
H100_STEPS = Path(__file__).resolve().parents[2] / "predictor" / "data" / "h100" / "steps.csv"
AXES = (
    "trace",
    "latency_model",
    "timing",
    "protocol",
    "slo_scale",
    "arrival_cv",
    "interactive_share",
)
DEFAULT_SHARE = "default"  # interactive_share: the tier file's own mix


class MapCell(BaseModel):
    """One operating point of the map (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trace: str | None
    latency_model: str
    timing: Literal["oracle", "noise"]
    protocol: Literal["steady-state", "qoserve"]
    slo_scale: float = Field(gt=0)
    arrival_cv: float = Field(gt=0)
    interactive_share: float | None = Field(default=None, ge=0, le=1)  # None: the tiers' mix

    def label(self) -> str:
        trace = Path(self.trace).stem if self.trace else "synthetic"
        share = "mix" if self.interactive_share is None else f"int{self.interactive_share:g}"
        proto = "" if self.protocol == "steady-state" else f" {self.protocol}-protocol"
        return (
            f"{trace} {self.latency_model} {self.timing}{proto} "
            f"slo x{self.slo_scale:g} cv{self.arrival_cv:g} {share}"
        )


def _listed(*values: Any) -> list[Any]:
    return list(values)


class MapAxes(BaseModel):
    """The values of each axis; the first value of each is the base of the star grid."""

    model_config = ConfigDict(extra="forbid")
    trace: list[str | None] = Field(default_factory=lambda: _listed(None), min_length=1)
    latency_model: list[str] = Field(
        default_factory=lambda: ["roofline-h100", H100_MEASURED, "qoserve-a100"], min_length=1
    )
    timing: list[Literal["oracle", "noise"]] = Field(
        default_factory=lambda: _listed("oracle", "noise"), min_length=1
    )
    protocol: list[Literal["steady-state", "qoserve"]] = Field(
        default_factory=lambda: _listed("steady-state", "qoserve"), min_length=1
    )
    slo_scale: list[float] = Field(default_factory=lambda: [1.0, 0.25, 0.5, 2.0], min_length=1)
    arrival_cv: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0], min_length=1)
    interactive_share: list[float | None] = Field(
        default_factory=lambda: _listed(0.2, 0.5, 0.8), min_length=1
    )

    @field_validator("slo_scale", "arrival_cv")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (math.isfinite(x) and x > 0)]
        if bad:
            raise ValueError(f"values must be positive numbers (got {bad[0]!r})")
        return v

    @field_validator("interactive_share")
    @classmethod
    def _share(cls, v: list[float | None]) -> list[float | None]:
        bad = [x for x in v if x is not None and not 0 <= x <= 1]
        if bad:
            raise ValueError(f"shares must be in [0, 1] (got {bad[0]!r})")
        return v


def parse_map_axes(items: Iterable[str], base: MapAxes) -> MapAxes:
    """``base`` with each ``NAME=V1,V2`` of ``items`` replacing that axis (also ``;``-separated
    within one item). ValueError names the bad axis or value."""
    values: dict[str, Any] = base.model_dump()
    for item in (part.strip() for raw in items for part in raw.split(";")):
        if not item:
            continue
        name, eq, rest = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in AXES:
            raise ValueError(
                f"--map-axes {item!r}: expected NAME=V1,V2 with NAME one of {', '.join(AXES)}"
            )
        raw_values = [v.strip() for v in rest.split(",") if v.strip()]
        if not raw_values:
            raise ValueError(f"--map-axes {item!r}: no value given for {name}")
        parsed: list[Any] = []
        for v in raw_values:
            if name in ("slo_scale", "arrival_cv") or (
                name == "interactive_share" and v != DEFAULT_SHARE
            ):
                try:
                    parsed.append(float(v))
                except ValueError:
                    raise ValueError(f"--map-axes {name}: {v!r} is not a number") from None
            elif name == "interactive_share":
                parsed.append(None)
            elif name == "trace":
                if not Path(v).is_file():
                    raise ValueError(f"--map-axes trace: no trace file at {v!r}")
                parsed.append(v)
            else:
                parsed.append(v)
        values[name] = parsed
    try:
        return MapAxes(**values)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"--map-axes {err['loc'][0]}: {err['msg']} (got {err.get('input')!r})"
                         ) from None


def map_cells(axes: MapAxes, grid: Literal["star", "full"] = "star") -> list[MapCell]:
    """The cells of the map, base cell first, without duplicates (module docstring)."""
    lists = {name: getattr(axes, name) for name in AXES}
    if grid == "full":
        combos = [dict(zip(AXES, vals, strict=True)) for vals in itertools.product(*lists.values())]
    else:
        base = {name: vals[0] for name, vals in lists.items()}
        combos = [base] + [
            {**base, name: v} for name in AXES for v in lists[name][1:]
        ]
    cells: list[MapCell] = []
    for c in combos:
        if c["protocol"] == "qoserve":  # the protocol fixes its tiers, arrivals and step model
            c = {**c, "slo_scale": 1.0, "arrival_cv": 1.0, "interactive_share": None,
                 "latency_model": "qoserve-a100"}
        cell = MapCell(**c)
        if cell not in cells:
            cells.append(cell)
    return cells


def resolve_latency_model(spec: str, models_dir: Path) -> str:
    """A latency-model spec for the capacity harness: ``h100-measured`` is trained (once, into
    ``models_dir``) on the measured H100 steps; anything else is passed on as is."""
    if spec != H100_MEASURED:
        return spec
    out = models_dir / H100_MEASURED
    if not (out / "model.json").is_file():
        if not H100_STEPS.is_file():
            raise ValueError(f"latency model {H100_MEASURED}: no measured steps at {H100_STEPS}")
        from predictor.train import main as train

        if train(["--steps", str(H100_STEPS), "--out", str(out)]) != 0:
            raise ValueError(f"latency model {H100_MEASURED}: training on {H100_STEPS} failed")
    return str(out)


class MapSearch(BaseModel):
    """The capacity search run in every cell (stored with each cell of ``map.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    policies: str  # comma-separated registered names (steady-state cells)
    seeds: int = Field(ge=1)
    budgets: str  # swept for fixed-budget baselines
    trial_seconds: float = Field(gt=0)
    warmup_seconds: float = Field(ge=0)
    horizon_seconds: float = Field(gt=0)
    min_requests: int = Field(ge=10)
    rel_tol: float = Field(gt=0, lt=1)
    sweep_rel_tol: float = Field(gt=0, lt=1)
    protocol_requests: int = Field(ge=10)  # qoserve-protocol cells, at the published rates
    replicas: int = Field(default=1, ge=1)
    router: str = "round-robin"
    tiers: str | None = None

    def cell_config(
        self, cell: MapCell, latency: str, trace: Path | None, workers: int
    ) -> CapacityConfig:
        """The ``CapacityConfig`` of ``cell`` (``latency``: its resolved latency-model spec)."""
        path = Path(cell.trace) if cell.trace else trace
        timing = cell_timing(cell)
        if cell.protocol == "qoserve":
            config = qoserve_capacity_config(
                path, seeds=self.seeds, num_requests=self.protocol_requests, workers=workers,
                latency_model=latency, curve_points=(), published_rates=True,
            )
            return config.model_copy(
                update={"sim": config.sim.model_copy(update={"timing": timing})}
            )
        tiers = scale_tiers(load_tiers(self.tiers), cell.slo_scale)
        mix = (
            None if cell.interactive_share is None
            else top_tier_mix(tiers, cell.interactive_share)
        )
        return CapacityConfig(
            contenders=[
                Contender(label=n.strip(), policy=n.strip())
                for n in self.policies.split(",") if n.strip()
            ],
            trace=path,
            tiers=Path(self.tiers) if self.tiers else None,
            tier_mix=mix,
            slo_scale=cell.slo_scale,
            arrival="poisson" if cell.arrival_cv == 1.0 else "gamma",
            cv=cell.arrival_cv,
            latency_model=latency,
            sim=SimConfig(replicas=self.replicas, router=self.router, timing=timing),
            seeds=self.seeds,
            budgets=[int(b) for b in self.budgets.split(",") if b.strip()],
            trial_seconds=self.trial_seconds,
            warmup_seconds=self.warmup_seconds,
            horizon_seconds=self.horizon_seconds,
            min_requests=self.min_requests,
            rel_tol=self.rel_tol,
            sweep_rel_tol=self.sweep_rel_tol,
            curve_points=[],
            workers=workers,
        )


CellConfig = Callable[[MapCell, str], CapacityConfig]


def run_map(
    cells: Sequence[MapCell],
    make_config: CellConfig,
    out: Path,
    settings: dict[str, Any],
    on_cell: Callable[[int, int, MapCell, dict[str, Any] | None], None] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the capacity search in every cell; write ``out/map.json`` after each cell.

    ``make_config(cell, latency_spec)`` builds the cell's ``CapacityConfig``; ``settings``
    (the search's tolerances and policies) is stored with every cell, and a cell already in
    ``map.json`` with the same settings is not run again."""
    path = out / "map.json"
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        try:
            for entry in json.loads(path.read_text()):
                if entry.get("settings") == settings:
                    done[_key(entry)] = entry
        except (json.JSONDecodeError, AttributeError, TypeError):
            done = {}
    rows: list[dict[str, Any]] = []
    for i, cell in enumerate(cells):
        key = _key(cell.model_dump(mode="json"))
        if key in done:
            rows.append(done[key])
            if on_cell:
                on_cell(i, len(cells), cell, None)
            continue
        t0 = time.perf_counter()
        config = make_config(cell, resolve_latency_model(cell.latency_model, out / "models"))
        result = run_capacity(config, progress)
        row = {
            **cell.model_dump(mode="json"),
            "label": cell.label(),
            "policies": {
                name: {"capacity_rps": r["capacity_rps"], "capacity_rps_90": r["capacity_rps_90"]}
                for name, r in result["policies"].items()
            },
            "budgets": {name: r["budget"] for name, r in result["policies"].items()},
            "comparison": {
                k: result["comparison"].get(k)
                for k in ("best_baseline", "best_baseline_90", "capacity_ratio",
                          "capacity_ratio_90")
            },
            "timing_model": config.sim.timing.label(),
            "step_rate_bound_rps": (result.get("step_rate_bound") or {}).get("rate_rps"),
            "wall_s": time.perf_counter() - t0,
            "settings": settings,
        }
        rows.append(row)
        write_json_list(path, rows + [d for k, d in done.items() if k not in _keys(rows)])
        if on_cell:
            on_cell(i, len(cells), cell, row)
    write_json_list(path, rows)
    return rows


def write_json_list(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(path)


def _key(entry: dict[str, Any]) -> str:
    return json.dumps({k: entry.get(k) for k in AXES}, sort_keys=True)


def _keys(rows: list[dict[str, Any]]) -> set[str]:
    return {_key(r) for r in rows}


def cell_timing(cell: MapCell, seed: int = 0) -> TimingConfig:
    """The simulator's step timing of a cell (``oracle`` or fitted ``noise``)."""
    return timing_from_options(cell.timing, seed)


def ratios(row: dict[str, Any], ours: str = "slidingserve") -> tuple[float | None, float | None]:
    """SlidingServe's capacity over the best other policy's in a row: (1%, 90%)."""
    pols = row["policies"]
    if ours not in pols or len(pols) < 2:
        return None, None
    out: list[float | None] = []
    for key in ("capacity_rps", "capacity_rps_90"):
        mine = pols[ours][key]
        best = max((v[key] or 0.0 for k, v in pols.items() if k != ours), default=0.0)
        out.append(None if mine is None or best <= 0 else mine / best)
    return out[0], out[1]


def map_table(rows: Sequence[dict[str, Any]], ours: str = "slidingserve") -> Table:
    """Per cell: every policy's capacity (1% / 90%, rps) and SlidingServe's ratio to the best
    other policy."""
    names = list(dict.fromkeys(n for r in rows for n in r["policies"]))
    table = Table(title="Regime map: capacity, worst tier <= 1% late / >= 90% on time (rps)")
    for col in ("trace", "latency model", "timing", "protocol", "SLO x", "CV", "top share"):
        table.add_column(col, no_wrap=True)
    for n in names:
        table.add_column(n, justify="right", no_wrap=True)
    table.add_column(f"{ours} / best", justify="right", no_wrap=True)
    table.add_column("TPOT bound", justify="right", no_wrap=True)  # capacity.step_rate
    for r in rows:
        caps = [
            "-" if n not in r["policies"] else
            f"{r['policies'][n]['capacity_rps']:.2f} / "
            + ("-" if r["policies"][n]["capacity_rps_90"] is None
               else f"{r['policies'][n]['capacity_rps_90']:.2f}")
            for n in names
        ]
        r1, r90 = ratios(r, ours)
        ratio = " / ".join("-" if x is None else f"{x:.2f}x" for x in (r1, r90))
        share = r["interactive_share"]
        table.add_row(
            Path(r["trace"]).stem[:16] if r["trace"] else "synthetic",
            r["latency_model"] if len(r["latency_model"]) <= 16 else Path(r["latency_model"]).name,
            r["timing"],
            r["protocol"],
            f"{r['slo_scale']:g}",
            f"{r['arrival_cv']:g}",
            "mix" if share is None else f"{share:g}",
            *caps,
            ratio,
            "-" if r.get("step_rate_bound_rps") is None else f"{r['step_rate_bound_rps']:.2f}",
        )
    return table


def plot_map(rows: Sequence[dict[str, Any]], path: Path, ours: str = "slidingserve") -> None:
    """Per cell, SlidingServe's capacity over the best baseline's (1% and 90%), with 1.0 and
    the 1.3x target marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    r1 = [ratios(r, ours)[0] or 0.0 for r in rows]
    r90 = [ratios(r, ours)[1] or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], r1, height=0.4, label="worst tier <= 1% late")
    ax.barh([y + 0.2 for y in ys], r90, height=0.4, label=">= 90% on time")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(1.3, color="grey", linestyle="--", linewidth=0.8, label="1.3x target")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{ours} capacity / best baseline's")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "AXES",
    "MapAxes",
    "MapCell",
    "MapSearch",
    "map_cells",
    "map_table",
    "parse_map_axes",
    "plot_map",
    "ratios",
    "run_map",
]
