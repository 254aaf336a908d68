"""Command-line options shared by ``slidingserve sim`` and ``slidingserve capacity``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LatencyModelOption = Annotated[
    str | None,
    typer.Option(
        help="Latency model: roofline-h100 (default), qoserve-a100, or a predictor model dir "
        "(python -m predictor.train)."
    ),
]
TimingOption = Annotated[
    str, typer.Option(help="Step timing: oracle (the policy's model) | noise | replay.")
]
TimingSeedOption = Annotated[int, typer.Option(help="Seed of noisy or replayed timing.")]
NoiseSigmaOption = Annotated[
    float | None,
    typer.Option(
        help="--timing noise: sigma (default: fitted to the CPU profile's repeats, "
        "docs/simulator.md)."
    ),
]
ReplayOption = Annotated[
    Path | None, typer.Option(help="--timing replay: step trace of measured steps.")
]
PlanTimeOption = Annotated[
    str | None,
    typer.Option(
        help="Planning time added to each step: MS, or POLICY=MS items, comma-separated."
    ),
]
