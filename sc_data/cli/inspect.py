"""``sc-data inspect``: summary of a pairs / scored Parquet, a staged dataset folder or a staged Hub dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sc_data.cli._common import JsonFlag, handle_errors, print_json, stdout


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return f"{value:,}" if isinstance(value, int) else str(value)


@handle_errors
def inspect_command(
    path: Annotated[Path, typer.Argument(help="A pairs or scored Parquet file, a staged dataset folder, or a staged Hub dataset ORG/NAME[@REV] (through the Hugging Face cache).", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Summarise a pairs, scored or staged table: rows, lengths, categories, flags, scores, tiers.

    Examples:

        sc-data inspect pairs.parquet

        sc-data inspect staged/ --json

        sc-data inspect my-org/safety-curriculum@v1
    """
    from sc_data.inspect import inspect

    summary = inspect(path)
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"inspect {summary['path']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        if key in ("path", "columns"):
            continue
        if key in ("lengths", "scores"):
            for name, stats in value.items():
                table.add_row(f"{key}: {name}", _fmt(stats))
        else:
            table.add_row(key, _fmt(value))
    table.add_row("columns", ", ".join(summary["columns"]))
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the app."""
    app.command("inspect")(inspect_command)
