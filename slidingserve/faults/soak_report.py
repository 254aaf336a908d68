"""Judge a soak against its targets, and draw its curve.

The targets, for a 30-minute soak (a shorter or longer one scales the windows with its length:
the first and last thirds, the last two thirds):

* nothing lost: every request sent got a full answer, a 429 or an explicit error;
* no replica restart: the engine and ingress replicas at the end are those of the start;
* KV blocks all freed at the end: every engine reports 0 blocks in use after the drain;
* flat memory: no process's RSS grew more than 5 % over the last 20 minutes (two thirds),
  comparing the median of the window's first tenth of samples with that of its last tenth;
* stable latency: each tier's p99 TTFT of the last 10 minutes (third) within 10 % of the first
  10 minutes'. Every served request counts: a stream's TTFT as the client saw it, a whole
  answer's as the ingress measured it (``x-ttft-ms``; the client sees no first token). Beside
  each change, a 90 % bootstrap interval: with a few hundred requests per tier and third, a p99
  rests on the few slowest, and the interval shows how far it moves by chance alone. When the
  schedule is played three times (``SoakConfig.repeat``), the thirds are the plays and the
  bootstrap is paired: it resamples 30-second blocks of the schedule, each drawn request
  bringing its TTFT in the first play and in the last. Otherwise each third's requests are
  resampled on their own. Beside the target, for reading it: the medians' change over the same
  windows, and the host probe's (``soak_watch.host_probe_ms``): on a shared machine the same
  work can run faster or slower from one third to the next, and a p99 that moves with the
  median and the probe moved with the machine.

The report keeps every request (``requests.rows``: arrival, tier, stream, outcome, TTFT,
latency, slot, play) for analyses of its own.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from slidingserve.slo.tiers import TierSet

RSS_GROWTH_MAX = 0.05
TTFT_CHANGE_MAX = 0.10
BLOCK_S = 30.0  # the paired bootstrap resamples the schedule in blocks of this many seconds
KINDS = ("served", "rejected", "error", "lost")


def relative_change(first: float | None, last: float | None) -> float | None:
    """``last / first - 1``, rounded to 4 digits; None when either is missing (or 0)."""
    return None if not (first and last) else round(last / first - 1, 4)


def p99(xs: list[float]) -> float | None:
    return float(np.percentile(xs, 99)) if xs else None


def outcomes(sent: list[Any], names: list[str]) -> dict[str, Any]:
    def count(group: list[Any]) -> dict[str, int]:
        out = {"sent": len(group), **{k: sum(1 for s in group if s.kind == k) for k in KINDS}}
        out["streamed"] = sum(1 for s in group if s.stream)
        return out

    total = count(sent)
    return {**total, "answered": total["sent"] - total["lost"],
            "by_tier": {n: count([s for s in sent if s.tier == n]) for n in names},
            "lost_examples": sorted({s.message for s in sent if s.kind == "lost"})[:5],
            "error_examples": sorted({s.message for s in sent if s.kind == "error"})[:5]}


def ttfts(sent: list[Any], tier: str, t0: float, t1: float) -> list[float]:
    """TTFTs of the tier's served requests that arrived in ``[t0, t1)``."""
    return [s.ttft_s for s in sent if s.tier == tier and s.kind == "served"
            and s.ttft_s is not None and t0 <= s.t_s < t1]


def ttfts_by_slot(sent: list[Any], tier: str, play: int) -> dict[int, float]:
    """TTFTs of the tier's served requests of one play of the schedule, by schedule slot."""
    return {s.slot: s.ttft_s for s in sent if s.tier == tier and s.kind == "served"
            and s.ttft_s is not None and s.play == play and s.slot is not None}


def tail(xs: list[float]) -> dict[str, Any]:
    """How many TTFTs, their p99 and their median."""
    return {"n": len(xs), "p99_s": p99(xs),
            "p50_s": float(np.median(xs)) if xs else None}


def host_speed(samples: list[dict], first: tuple[float, float],
               last: tuple[float, float]) -> dict[str, Any]:
    """The host probe's median in the first and the last window (``soak_watch.host_probe_ms``),
    and its change: positive when the machine ran the same work slower at the end."""
    def median(t0: float, t1: float) -> float | None:
        xs = [s["host_probe_ms"] for s in samples
              if t0 <= s["t_s"] <= t1 and s.get("host_probe_ms") is not None]
        return float(np.median(xs)) if xs else None

    a, b = median(*first), median(*last)
    return {"first_ms": a, "last_ms": b, "change": relative_change(a, b),
            "t_s": [s["t_s"] for s in samples], "probe_ms": [s.get("host_probe_ms")
                                                             for s in samples]}


def ttft_windows(sent: list[Any], names: list[str], edges: list[float]) -> list[dict]:
    """p99 TTFT of each tier's served requests, per window ``[edges[i], edges[i+1])``."""
    rows = []
    for t0, t1 in itertools.pairwise(edges):
        tiers = {}
        for n in names:
            tiers[n] = tail(ttfts(sent, n, t0, t1))
        rows.append({"t0_s": round(t0, 1), "t1_s": round(t1, 1), "tiers": tiers})
    return rows


def p99_change_interval(first: list[float], last: list[float], draws: int = 2000,
                        level: float = 0.9, seed: int = 0) -> list[float] | None:
    """Bootstrap interval of ``p99(last) / p99(first) - 1``: each window's requests resampled
    with replacement, ``draws`` times (None when a window is empty)."""
    if not first or not last:
        return None
    rng = np.random.default_rng(seed)
    a, b = np.asarray(first), np.asarray(last)
    pa = np.percentile(a[rng.integers(0, a.size, (draws, a.size))], 99, axis=1)
    pb = np.percentile(b[rng.integers(0, b.size, (draws, b.size))], 99, axis=1)
    ratio = pb / np.maximum(pa, 1e-12) - 1.0
    lo, hi = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def p99_change_interval_paired(first: dict[int, float], last: dict[int, float],
                               block: int = 1, draws: int = 2000, level: float = 0.9,
                               seed: int = 0) -> list[float] | None:
    """Bootstrap interval of ``p99(last) / p99(first) - 1`` for two plays of one schedule,
    paired: runs of ``block`` consecutive schedule slots (slots are in arrival order) are
    resampled with replacement, each drawn slot counting in both plays (where it was served).
    Both p99s are so taken over the same requests, and a block keeps a burst's requests
    together: the slow requests of a tail come in bursts, and resampling them one by one would
    make the interval too narrow."""
    if not first or not last:
        return None
    slots = sorted(set(first) | set(last))
    a = np.array([first.get(k, np.nan) for k in slots])
    b = np.array([last.get(k, np.nan) for k in slots])
    groups = np.asarray(slots) // max(1, block)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    bounds = list(itertools.pairwise([*starts.tolist(), len(slots)]))
    rng = np.random.default_rng(seed)
    ratio = []
    for _ in range(draws):
        idx = np.concatenate([np.arange(*bounds[i])
                              for i in rng.integers(0, len(bounds), len(bounds))])
        pa, pb = np.nanpercentile(a[idx], 99), np.nanpercentile(b[idx], 99)
        if np.isfinite(pa) and np.isfinite(pb):
            ratio.append(pb / max(pa, 1e-12) - 1.0)
    if not ratio:
        return None
    lo, hi = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def rss_growth(samples: list[dict], t0: float, t1: float) -> dict[str, float]:
    """Per process: median RSS of the window's last tenth of samples / first tenth, - 1."""
    window = [s for s in samples if t0 <= s["t_s"] <= t1]
    out: dict[str, float] = {}
    labels = {k for s in window for k in s["rss_mib"]}
    for label in sorted(labels):
        xs = [s["rss_mib"][label] for s in window if label in s["rss_mib"]]
        if len(xs) < 2:
            continue
        k = max(1, len(xs) // 10)
        a, b = statistics.median(xs[:k]), statistics.median(xs[-k:])
        out[label] = round(b / a - 1, 4) if a > 0 else 0.0
    return out


ROW_FIELDS = ("t_s", "tier", "stream", "kind", "status", "ttft_s", "latency_s", "slot", "play")


def request_rows(sent: list[Any]) -> dict[str, Any]:
    """Every request as a row of ``ROW_FIELDS`` (compact in JSON)."""
    return {"columns": list(ROW_FIELDS),
            "rows": [[getattr(s, f) for f in ROW_FIELDS] for s in sent]}


def judge(cfg: Any, tiers: TierSet, sent: list[Any], left: list[Any], watch: Any,
          final: dict[str, Any], probe: dict[str, Any], rate: float,
          capacity: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    names = list(tiers)
    run_s = cfg.duration_s
    third = run_s / 3
    traffic = [s for s in watch.samples if s["t_s"] <= run_s]
    edges = list(np.linspace(0.0, run_s, cfg.curve_windows + 1))
    req = outcomes(sent, names)
    if cfg.repeat:
        by_slot = {n: (ttfts_by_slot(sent, n, 0), ttfts_by_slot(sent, n, 2)) for n in names}
        early = {n: list(a.values()) for n, (a, _) in by_slot.items()}
        late = {n: list(b.values()) for n, (_, b) in by_slot.items()}
        # blocks of BLOCK_S of the schedule's arrivals (all tiers' slots count)
        slots = 1 + max((x.slot for x in sent if x.slot is not None), default=0)
        block = max(1, round(slots * BLOCK_S / third))
        interval = {n: p99_change_interval_paired(*by_slot[n], block=block) for n in names}
    else:
        early = {n: ttfts(sent, n, 0.0, third) for n in names}
        late = {n: ttfts(sent, n, run_s - third, run_s + 1e-9) for n in names}
        interval = {n: p99_change_interval(early[n], late[n]) for n in names}
    first = {n: tail(xs) for n, xs in early.items()}
    last = {n: tail(xs) for n, xs in late.items()}
    change = {n: relative_change(first[n]["p99_s"], last[n]["p99_s"]) for n in names}
    median_change = {n: relative_change(first[n]["p50_s"], last[n]["p50_s"]) for n in names}
    host = host_speed(traffic, (0.0, third), (run_s - third, run_s))
    growth = rss_growth(traffic, run_s - 2 * third, run_s)
    worst = max(growth.items(), key=lambda kv: kv[1], default=("-", 0.0))
    kv_end = final["kv_blocks_used"]
    restarts = watch.restarts()
    targets = {
        "nothing_lost": {"ok": req["lost"] == 0, "lost": req["lost"], "sent": req["sent"]},
        "no_replica_restart": {"ok": restarts["count"] == 0, **restarts},
        "kv_blocks_freed": {"ok": bool(kv_end) and all(v == 0 for v in kv_end.values())
                            and not probe["engines_not_reached"],
                            "in_use_at_end": kv_end},
        "rss_flat": {"ok": bool(growth) and worst[1] <= RSS_GROWTH_MAX,
                     "max_growth": worst[1], "process": worst[0], "limit": RSS_GROWTH_MAX,
                     "window_s": [round(run_s - 2 * third, 1), round(run_s, 1)]},
        "ttft_p99_stable": {"ok": all(c is not None and abs(c) <= TTFT_CHANGE_MAX
                                      for c in change.values()),
                            "change": change, "limit": TTFT_CHANGE_MAX,
                            "change_interval_90": interval,
                            "paired": cfg.repeat,
                            # context, not part of the target: the same change of the median,
                            # and of the host's speed (the same work's time on this machine)
                            "median_change": median_change,
                            "host_probe_change": host["change"],
                            "first_window_s": [0.0, round(third, 1)],
                            "last_window_s": [round(run_s - third, 1), round(run_s, 1)]},
    }
    return {
        "minutes": cfg.minutes, "rate_rps": round(rate, 3), "load": cfg.load,
        "capacity": capacity, "requests": {**req, **request_rows(sent)},
        "left_mid_stream": {"sent": len(left), "left": sum(1 for x in left if x.left),
                            "examples": sorted({x.message for x in left if not x.left})[:5]},
        "host": host,
        "ttft": {"first": first, "last": last, "change": change, "median_change": median_change,
                 "change_interval_90": interval,
                 "windows": ttft_windows(sent, names, edges),
                 "targets_s": {n: tiers[n].ttft_s for n in names}},
        "memory": {"growth": growth,
                   "t_s": [s["t_s"] for s in watch.samples],
                   "rss_mib": {k: [s["rss_mib"].get(k) for s in watch.samples]
                               for k in sorted({k for s in watch.samples for k in s["rss_mib"]})}},
        "kv": {"end": kv_end, "total": final["kv_blocks_total"], "final_step_probe": probe,
               "in_use": [{"t_s": s["t_s"], **s["kv_blocks_used"]} for s in watch.samples]},
        # per engine over time: requests admitted and not finished, past their first token,
        # and not started (a queue that drifts up at a steady offered load shows here)
        "engines": {name: [{"t_s": s["t_s"], **s.get(key, {})} for s in watch.samples]
                    for name, key in (("held", "engine_queue"), ("running", "engine_running"),
                                      ("waiting", "engine_waiting"))},
        "replicas": {"first": watch.samples[0]["replicas"] if watch.samples else [],
                     "last": final["replicas"]},
        "targets": targets,
        "all_targets_met": all(t["ok"] for t in targets.values()),
        "config": config,
    }


def plot_soak(report: dict[str, Any], path: Path) -> None:
    """Memory of each process, each engine's load (KV blocks, requests held) and p99 TTFT of
    each tier over time, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, load, ttft) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    t_min = [t / 60 for t in report["memory"]["t_s"]]
    for label, ys in report["memory"]["rss_mib"].items():
        pts = [(t, y) for t, y in zip(t_min, ys, strict=True) if y is not None]
        if pts:
            mem.plot(*zip(*pts, strict=True), label=label, linewidth=1)
    mem.set_ylabel("RSS (MiB)")
    mem.set_yscale("log")
    mem.legend(fontsize=6, ncol=3, loc="upper left")
    mem.set_title(f"soak: {report['minutes']:g} min at {report['rate_rps']:.2f} req/s "
                  f"(lost {report['requests']['lost']} of {report['requests']['sent']})")
    kv_total = report["kv"]["total"] or {}
    for label in sorted({k for row in report["kv"]["in_use"] for k in row} - {"t_s"}):
        pts = [(row["t_s"] / 60, row[label]) for row in report["kv"]["in_use"]
               if row.get(label) is not None]
        if pts:
            of = f" of {kv_total[label]}" if kv_total.get(label) else ""
            load.plot(*zip(*pts, strict=True), linewidth=1, label=f"{label} KV blocks{of}")
    held = report.get("engines", {}).get("held", [])
    for label in sorted({k for row in held for k in row} - {"t_s"}):
        pts = [(row["t_s"] / 60, row[label]) for row in held
               if row.get(label) is not None]
        if pts:
            load.plot(*zip(*pts, strict=True), linewidth=1, linestyle=":",
                      label=f"{label} requests held")
    load.set_ylabel("per engine")
    load.legend(fontsize=6, ncol=2, loc="upper left")
    windows = report["ttft"]["windows"]
    mid = [(w["t0_s"] + w["t1_s"]) / 120 for w in windows]
    for i, tier in enumerate(report["ttft"]["targets_s"]):
        pts = [(m, w["tiers"][tier]["p99_s"]) for m, w in zip(mid, windows, strict=True)
               if w["tiers"][tier]["p99_s"] is not None]
        if pts:
            line = ttft.plot(*zip(*pts, strict=True), marker=".", label=f"{tier} p99")[0]
            ttft.axhline(report["ttft"]["targets_s"][tier], color=line.get_color(),
                         linestyle="--", linewidth=0.8, label=f"{tier} target" if i < 9 else None)
    ttft.set_yscale("log")
    ttft.set_ylabel("p99 TTFT (s)")
    ttft.set_xlabel("minutes")
    ttft.legend(fontsize=7, ncol=2)
    host = report.get("host") or {}
    probe = [(t / 60, y) for t, y in zip(host.get("t_s", []), host.get("probe_ms", []),
                                         strict=True) if y is not None]
    if probe:  # the machine's speed on the same axis of time (higher: slower)
        speed = ttft.twinx()
        speed.plot(*zip(*probe, strict=True), color="grey", linewidth=0.8, alpha=0.6)
        speed.set_ylabel("host probe (ms, grey)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
