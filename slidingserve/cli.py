"""The `slidingserve` console script."""

import typer

app = typer.Typer(help="SlidingServe: SLO-aware LLM serving.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    from slidingserve import __version__

    typer.echo(__version__)


from slidingserve.serve.cli import serve_cli  # noqa: E402  (serve, dashboards, bench http)

app.add_typer(serve_cli)
