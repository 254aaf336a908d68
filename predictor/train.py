"""``python -m predictor.train --steps PATH --out MODEL_DIR``

Trains the latency model (linear base + LightGBM mean and P90 models) on a step trace, holds out
a seeded split, writes the model directory atomically (version = the previous model's + 1) and
prints the held-out errors next to the linear and roofline baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from predictor.bundle import ModelBundle, read_version, save_bundle
from predictor.steptrace import AGGREGATIONS, StepTrace, aggregate_identical, read_steptrace
from predictor.training import TrainConfig, train_model


def load_steps(paths: list[Path], aggregate: str) -> StepTrace:
    trace = StepTrace.concat(read_steptrace(p) for p in paths)
    return aggregate_identical(trace, aggregate)


def report(bundle: ModelBundle) -> str:
    m = bundle.metrics
    lines = [
        f"model v{bundle.version}: n_train={m['n_train']} n_test={m['n_test']} "
        f"(aggregate={m.get('aggregate', 'none')})",
        f"  {'predictor':<22}{'MAPE':>9}{'P90 APE':>10}",
        f"  {'lightgbm mean':<22}{100 * m['mape']:>8.2f}%{100 * m['p90_ape']:>9.2f}%",
        f"  {'lightgbm p90':<22}{100 * m['p90']['mape']:>8.2f}%{100 * m['p90']['p90_ape']:>9.2f}%"
        f"   coverage {100 * m['p90']['coverage']:.1f}%",
    ]
    for name, e in m["baselines"].items():
        lines.append(f"  {name:<22}{100 * e['mape']:>8.2f}%{100 * e['p90_ape']:>9.2f}%")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m predictor.train", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("--steps", required=True, type=Path, action="append", help="step trace(s)")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument(
        "--aggregate",
        choices=AGGREGATIONS,
        default="min",
        help="merge repeated measurements of the same step shape (default: min)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=None, help="boosting rounds (default: config)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {"test_fraction": args.test_fraction, "seed": args.seed}
    if args.rounds is not None:
        overrides["num_boost_round"] = args.rounds
    try:
        config = TrainConfig(**overrides)
        trace = load_steps(args.steps, args.aggregate)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    version = (read_version(args.out) or 0) + 1
    bundle = train_model(trace, config, version)
    bundle.metrics["aggregate"] = args.aggregate
    bundle.metrics["steps"] = [str(p) for p in args.steps]
    save_bundle(bundle, args.out)
    print(report(bundle))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "version": version,
                "mape": bundle.metrics["mape"],
                "p90_ape": bundle.metrics["p90_ape"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
