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
SpellsOption = Annotated[
    str | None,
    typer.Option(
        help="Slow spells of the machine: RATE,SECONDS,X (spells per second, their mean "
        "length, execution time x X while one lasts), e.g. 0.05,0.5,2.5."
    ),
]
PlannerCorrectionOption = Annotated[
    float,
    typer.Option(
        help="The planner corrects its latency model online from the steps it sees, as the "
        "engine adapter does: the decay of its moving average (the adapter's 0.95); 0: off."
    ),
]
