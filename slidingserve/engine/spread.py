"""Seed bootstrap of a ``bench engine --find-capacity`` run: how much its capacities, and the
reference scheduler's ratio to the best baseline, depend on which workloads were run.

A capacity run pools, at every rate, the requests of one workload per seed (``--seeds``), the
same workloads for every scheduler. Those seeds are the run's sample of workloads. The
bootstrap draws them again, with replacement and the same draw for every scheduler and rate
(paired: the schedulers ran the same workloads), pools each draw's per-tier request counts
(a seed drawn twice counts twice) and recomputes both capacities from them exactly as a rate
sweep does (``knee.sweep_knees`` over the rates the run measured). The reported interval is the
central ``level`` share of that distribution (percentile method).

With ``k`` seeds there are only C(2k - 1, k) distinct draws (10 for 3 seeds, 126 for 5): up to
``EXACT_MAX_DRAWS`` of them the distribution is enumerated with its multinomial weights, so
the interval is exact and needs no random numbers; beyond that ``draws`` are sampled with a
fixed generator seed. With few seeds the interval is coarse (with 3 seeds, the 5% tails are
the draws of one seed three times). It measures the spread between workloads, not the run-to-run
noise of the machine, which only a re-run of the same seeds shows.

``spread(out)`` reads the run's ``capacity.json`` (schedulers, rates, seeds) and its
per-request files (``requests/rate-R.csv`` beside each scheduler's trace: tier and verdict of
every request) and returns (and ``write_spread`` writes) ``spread.json``::

    {"method", "level", "seeds", "draws", "exact", "reference",
     "policies": {NAME: {"capacity_rps": EST, "capacity_rps_90": EST}},
     "ratio_to_best_baseline": {"capacity_rps": EST | None, "capacity_rps_90": EST | None}}
    EST = {"value": all seeds pooled, "lo", "hi", "share_at_least": share of draws >= the
           threshold (1.0 for a ratio, absent for capacities)}

A ratio is None when every scheduler fails that criterion at the lowest rate measured, in
every draw (no capacity to compare: measure lower rates). The reference scheduler comes first
in ``policies``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.engine.knee import sweep_knees

EXACT_MAX_DRAWS = 5000
CRITERIA = ("capacity_rps", "capacity_rps_90")

# counts[scheduler][rate]: (seeds, tiers, 2) array of (requests, met) per seed and tier
Counts = dict[str, dict[float, np.ndarray]]


def capacities(pooled: dict[float, np.ndarray]) -> tuple[float, float]:
    """Both capacities of one scheduler from pooled per-tier ``(requests, met)`` rows per rate,
    by the rule of a rate sweep (``engine.knee.sweep_knees``)."""
    points = []
    for rate, rows in pooled.items():
        n, met = rows[:, 0], rows[:, 1]
        has = n > 0
        worst = float(np.max(1.0 - met[has] / n[has])) if has.any() else 0.0
        total = float(n.sum())
        points.append((rate, worst, float(met.sum()) / total if total else 1.0))
    return sweep_knees(points)


def seed_draws(k: int, draws: int, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(weights, probability, exact)``: one row of per-seed multiplicities (summing to ``k``)
    per draw and the probability of each row: every distinct draw with its multinomial
    probability when there are at most ``EXACT_MAX_DRAWS`` of them, else ``draws`` sampled
    ones, equally likely."""
    distinct = math.comb(2 * k - 1, k)
    if distinct <= EXACT_MAX_DRAWS:
        rows = [np.bincount(c, minlength=k) for c in combinations_with_replacement(range(k), k)]
        weights = np.array(rows, dtype=np.int64)
        ways = np.array([math.factorial(k) / math.prod(math.factorial(int(m)) for m in row)
                         for row in weights])
        return weights, ways / float(k) ** k, True
    rng = np.random.default_rng(rng_seed)
    picks = rng.integers(0, k, size=(draws, k))
    weights = np.stack([np.bincount(p, minlength=k) for p in picks])
    return weights, np.full(draws, 1.0 / draws), False


def weighted_interval(values: np.ndarray, prob: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of a discrete distribution (inverted CDF: each bound is
    one of ``values``; infinite values allowed)."""
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(prob[order])
    tail = (1.0 - level) / 2.0
    lo = v[min(int(np.searchsorted(cum, tail - 1e-12, side="right")), len(v) - 1)]
    hi = v[min(int(np.searchsorted(cum, 1.0 - tail - 1e-12, side="left")), len(v) - 1)]
    return float(lo), float(hi)


def bootstrap(counts: Counts, reference: str, level: float = 0.9, draws: int = 5000,
              rng_seed: int = 0) -> dict[str, Any]:
    """The module docstring's result (without ``seeds``) from per-seed counts."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (got {level!r})")
    if reference not in counts:
        raise ValueError(f"reference scheduler {reference!r} is not in the run "
                         f"(schedulers: {', '.join(counts)})")
    k = {rows.shape[0] for per_rate in counts.values() for rows in per_rate.values()}
    if len(k) != 1:
        raise ValueError(f"every trial must hold the same seeds (found {sorted(k)} seeds)")
    n_seeds = k.pop()
    if n_seeds < 2:
        raise ValueError(f"a seed bootstrap needs 2 or more workload seeds (the run has "
                         f"{n_seeds}); run with --seeds")
    weights, prob, exact = seed_draws(n_seeds, draws, rng_seed)
    caps: dict[str, np.ndarray] = {}  # scheduler -> (draws, 2) capacities
    point: dict[str, tuple[float, float]] = {}
    for name, per_rate in counts.items():
        point[name] = capacities({r: rows.sum(axis=0) for r, rows in per_rate.items()})
        pooled = {r: np.einsum("ds,stc->dtc", weights, rows) for r, rows in per_rate.items()}
        caps[name] = np.array([capacities({r: p[d] for r, p in pooled.items()})
                               for d in range(len(weights))])

    def est(values: np.ndarray, value: float, at_least: float | None) -> dict[str, Any]:
        lo, hi = weighted_interval(values, prob, level)
        out = {"value": _num(value), "lo": _num(lo), "hi": _num(hi)}
        if at_least is not None:
            out["share_at_least"] = float(prob[values >= at_least].sum())
        return out

    names = [reference, *(n for n in counts if n != reference)]
    policies = {name: {c: est(caps[name][:, i], point[name][i], None)
                       for i, c in enumerate(CRITERIA)} for name in names}
    baselines = [n for n in counts if n != reference]
    ratios: dict[str, Any] = {}
    if baselines:
        for i, c in enumerate(CRITERIA):
            best = np.max(np.stack([caps[n][:, i] for n in baselines]), axis=0)
            if not (caps[reference][:, i].any() or best.any()):
                ratios[c] = None  # every scheduler fails at the lowest rate in every draw
                continue
            best_point = max(point[n][i] for n in baselines)
            ratios[c] = est(_ratio(caps[reference][:, i], best),
                            float(_ratio(np.array([point[reference][i]]),
                                         np.array([best_point]))[0]), 1.0)
    return {"method": "seed bootstrap, percentile interval, paired across schedulers and rates",
            "level": level, "draws": len(weights), "exact": exact, "reference": reference,
            "policies": policies, "ratio_to_best_baseline": ratios}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, with x / 0 = inf for x > 0 and 0 / 0 = 1 (both fail at every rate: level)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r[(a == 0) & (b == 0)] = 1.0
    return r


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def read_counts(out: Path) -> tuple[Counts, list[int]]:
    """Per-seed counts of every trial of the finished capacity run in ``out``, and its seeds."""
    from slidingserve.engine.bench import requests_csv

    path = out / "capacity.json"
    if not path.is_file():
        raise ValueError(f"--spread: {str(path)!r} does not exist (run --find-capacity first)")
    data = json.loads(path.read_text())
    cfg = data.get("config") or {}
    seeds = list(cfg.get("workload_seeds") or [cfg.get("seed", 0)])
    counts: Counts = {}
    for name, result in data["policies"].items():
        counts[name] = {}
        for rate_key in result.get("trials", {}):
            rate = float(rate_key)
            counts[name][rate] = _seed_counts(requests_csv(out / name, rate), seeds)
    return counts, seeds


def _seed_counts(path: Path, seeds: list[int]) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"--spread: per-request file {str(path)!r} is missing")
    tiers: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    for rec in _rows(path):
        seed = int(rec["seed"])
        if seed not in seeds:
            raise ValueError(f"--spread: {str(path)!r} holds seed {seed}, not one of the "
                             f"run's seeds {seeds}")
        rows.append((seeds.index(seed), tiers.setdefault(rec["tier"], len(tiers)),
                     int(rec["met"])))
    counts = np.zeros((len(seeds), max(len(tiers), 1), 2), dtype=np.int64)
    for s, t, met in rows:
        counts[s, t, 0] += 1
        counts[s, t, 1] += met
    return counts


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def spread(out: Path, reference: str | None = None, level: float = 0.9) -> dict[str, Any]:
    """``bootstrap`` of the run in ``out``; the reference is ``slidingserve`` when the run has
    it, else its first scheduler."""
    counts, seeds = read_counts(out)
    if not counts:
        raise ValueError(f"--spread: {str(out / 'capacity.json')!r} lists no scheduler")
    ref = reference or ("slidingserve" if "slidingserve" in counts else next(iter(counts)))
    return {"seeds": seeds, **bootstrap(counts, ref, level)}


def write_spread(out: Path, result: dict[str, Any]) -> Path:
    path = out / "spread.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def format_spread(result: dict[str, Any]) -> list[str]:
    """Printable lines: each scheduler's capacities with their interval, then the ratio."""
    pct = round(100 * result["level"])
    lines = [f"seed bootstrap over seeds {result['seeds']} ({result['draws']} draws, "
             f"{'exact' if result['exact'] else 'sampled'}), {pct}% intervals:"]
    for name, caps in result["policies"].items():
        a, b = caps["capacity_rps"], caps["capacity_rps_90"]
        lines.append(f"  {name:15s} worst tier <= 1%: {_f(a['value'])} rps "
                     f"[{_f(a['lo'])}, {_f(a['hi'])}]; >= 90%: {_f(b['value'])} rps "
                     f"[{_f(b['lo'])}, {_f(b['hi'])}]")
    for c, r in result["ratio_to_best_baseline"].items():
        label = "worst tier <= 1%" if c == "capacity_rps" else ">= 90%"
        if r is None:
            lines.append(f"  {result['reference']} / best baseline, {label}: none (every "
                         "scheduler fails at the lowest rate measured)")
            continue
        lines.append(f"  {result['reference']} / best baseline, {label}: {_f(r['value'])}x "
                     f"[{_f(r['lo'])}, {_f(r['hi'])}], at least 1x in "
                     f"{100 * r['share_at_least']:.0f}% of draws")
    return lines


def _f(x: float | str) -> str:
    return x if isinstance(x, str) else f"{x:.2f}"
