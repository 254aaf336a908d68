"""The ``slidingserve`` console script.

Each area registers its commands here, from its own module: the simulator (``sim``), the
capacity harness (``capacity``, ``run``). To add an area, write its typer functions (or a
``typer.Typer()`` sub-app) in that area's folder and add one line below, e.g.
``app.add_typer(serve_app, name="serve")``. Bad values (unknown policy, bad trace, bad tier
file or mix) end with a message naming the value and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from slidingserve.capacity.cli import capacity, run
from slidingserve.engine.cli import bench_engine, bench_prefix
from slidingserve.faults.cli import faults_cli
from slidingserve.serve.cli import bench_cli, serve_cli
from slidingserve.sim.cli import sim

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(help="SlidingServe: SLO-aware LLM serving.", no_args_is_help=True)


def friendly_errors(fn: F) -> F:
    """Turn configuration errors (ValueError and subclasses) into a one-line message, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.BadParameter:
            raise
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command()
def version() -> None:
    """Print the version."""
    from slidingserve import __version__

    typer.echo(__version__)


app.command("sim")(friendly_errors(sim))
app.command("capacity")(friendly_errors(capacity))
app.command("run")(friendly_errors(run))
app.add_typer(serve_cli)  # serve, dashboards push/render, bench http
bench_cli.add_typer(faults_cli, name="faults")  # bench faults (reliability scenarios)
bench_cli.command("engine")(friendly_errors(bench_engine))  # bench engine (engine/cli.py)
bench_cli.command("prefix")(friendly_errors(bench_prefix))  # bench prefix (engine/cli.py)


def main() -> None:  # pragma: no cover - console entry for `python -m slidingserve.cli`
    app(sys.argv[1:])
