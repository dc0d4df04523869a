"""`sc-data report`: plots of a staged dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sc_data.cli._common import JsonFlag, handle_errors, print_json, stdout


@handle_errors
def report_command(
    path: Annotated[Path, typer.Argument(help="Staged dataset folder.", exists=True, file_okay=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the PNGs [default: <PATH>_report beside it].", file_okay=False)
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the PNGs of an earlier report (only those its manifest lists).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Plot difficulty by tier, categories x tiers, score correlations and score distributions.

    Examples:

      sc-data report staged/

      sc-data report staged/ -o plots/
    """
    from sc_data.stage.report import report

    paths = report(path, output, overwrite=overwrite)
    if as_json:
        print_json([str(p) for p in paths])
        return
    for p in paths:
        stdout.print(str(p), highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sc-data report` to ``app``."""
    app.command("report")(report_command)
