"""``python -m predictor.bench --model MODEL_DIR [--kind mean|p90] [--out JSON]``

Times the latency model's hot path and prints the medians (microseconds), also writing them as
JSON (default ``MODEL_DIR/bench.json``):

  predict_many_64_us          predict_features on 64 candidate batches (a (64, F) matrix built
                              with numpy from one decode base, as the planners do)
  predict_one_us              predict_features on one batch (a (1, F) matrix)
  predict_many_shapes_64_us   predict_many on 64 BatchShapes (includes building their features)
  predict_shape_one_us        predict on one BatchShape (includes building its features)
  lightgbm_64_us, lightgbm_one_us   LightGBM's own Booster.predict, for comparison
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from predictor.model import LightGBMLatencyModel
from slidingserve.latency.features import BatchShape, decode_features, with_prefill_chunks


def median_us(fn: Callable[[], Any], repeats: int, warmup: int = 50) -> float:
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    clock = time.perf_counter
    for i in range(repeats):
        t = clock()
        fn()
        times[i] = clock() - t
    return float(np.median(times) * 1e6)


def candidates(n: int, seed: int = 0) -> tuple[np.ndarray, list[BatchShape]]:
    """``n`` candidate batches: 24 decodes plus one prefill chunk of a different size each."""
    rng = np.random.default_rng(seed)
    ctx = tuple(int(c) for c in rng.integers(64, 1500, size=24))
    chunks = np.linspace(16, 1024, n).round()
    X = with_prefill_chunks(decode_features(ctx), chunks, 256)
    shapes = [BatchShape(prefill=((int(c), 256),), decode_ctx=ctx) for c in chunks]
    return X, shapes


def run_bench(model: LightGBMLatencyModel, repeats: int) -> dict[str, Any]:
    X64, shapes64 = candidates(64)
    X1, shape1 = X64[:1].copy(), shapes64[0]
    booster = model._booster
    return {
        "predict_many_64_us": median_us(lambda: model.predict_features(X64), repeats),
        "predict_one_us": median_us(lambda: model.predict_features(X1), repeats),
        "predict_many_shapes_64_us": median_us(lambda: model.predict_many(shapes64), repeats // 4),
        "predict_shape_one_us": median_us(lambda: model.predict(shape1), repeats),
        "lightgbm_64_us": median_us(lambda: booster.predict(X64), repeats // 10),
        "lightgbm_one_us": median_us(lambda: booster.predict(X1), repeats // 10),
        "repeats": repeats,
        "model_version": model.version,
        "kind": model.kind,
        "num_trees": model.forest.num_trees,
        "num_tables": len(model.forest.tables),
        "table_cells": int(sum(t.values.size for t in model.forest.tables)),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m predictor.bench", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--kind", choices=("mean", "p90"), default="mean")
    p.add_argument("--repeats", type=int, default=5000)
    p.add_argument(
        "--out", type=Path, default=None, help="JSON output (default MODEL_DIR/bench.json)"
    )
    args = p.parse_args(argv)
    if args.repeats < 40:
        p.error(f"--repeats must be >= 40 (got {args.repeats})")
    model = LightGBMLatencyModel.load(args.model, args.kind)
    result = run_bench(model, args.repeats)
    out = args.out or args.model / "bench.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:<28}{v:.2f}" if isinstance(v, float) else f"{k:<28}{v}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
