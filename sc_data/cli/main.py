"""Entry point of the `sc-data` console script: wires one command module per pipeline verb."""

from __future__ import annotations

import typer

import sc_data
from sc_data.cli import (
    decontaminate,
    eval,
    ingest,
    inspect,
    judge,
    publish,
    report,
    score,
    stage,
    train,
    verify,
)
from sc_data.cli._common import stdout

app = typer.Typer(
    name="sc-data",
    help="Curate curriculum preference datasets for safety alignment and train on them.\n\n"
    "Pipeline: ingest -> [decontaminate] -> score -> stage -> (publish | train) -> eval -> report; judge fit makes the probe judge.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    # Help texts write "[default: x]" literally; rich markup would swallow the brackets.
    rich_markup_mode=None,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"sc-data {sc_data.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and --json output: no progress bars, tables or info logs."),
) -> None:
    """Curate curriculum preference datasets for safety alignment and train on them."""
    stdout.quiet = quiet


for _module in (ingest, decontaminate, inspect, publish, stage, verify, report, score, judge, train, eval):
    _module.register(app)

if __name__ == "__main__":
    app()
