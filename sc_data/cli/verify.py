"""`sc-data verify`: check a staged folder's files against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sc_data.cli._common import JsonFlag, handle_errors, print_json, stdout


@handle_errors
def verify_command(
    path: Annotated[Path, typer.Argument(help="Staged dataset folder (from `sc-data stage` or `sc-data pull`).", exists=True, file_okay=False)],
    as_json: JsonFlag = False,
) -> None:
    """Recompute every shard's sha256 and rows and the counts; exit 1 naming the first bad file.

    Examples:

      sc-data verify staged/

      sc-data verify staged/ --json
    """
    from sc_data.stage.folder import verify

    report = verify(path)
    if as_json:
        print_json(report.to_dict())
        return
    splits = ", ".join(f"{k} {v}" for k, v in report.by_split.items())
    stdout.print(
        f"OK: {report.files} files match {path}/sc_manifest.json; rows in {report.rows_in} = "
        f"out {report.rows_out} ({splits}) + rejected {report.rows_rejected}"
    )


def register(app: typer.Typer) -> None:
    """Add `sc-data verify` to ``app``."""
    app.command("verify")(verify_command)
