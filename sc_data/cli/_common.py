"""What every command shares: option aliases, error handling, output helpers.

Shared options are ``Annotated`` aliases so a flag's name and help text are identical in every
command. Results go to stdout; logs, warnings, errors and progress to stderr.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sc_data.errors import ScDataError

stdout = Console()
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DEBUG_ENV = "SC_DATA_DEBUG"

OutputFile = Annotated[Path, typer.Option("--output", "-o", help="Output file.", dir_okay=False)]
OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder.", file_okay=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same result.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML file with options; flags given on the command line win.", exists=True, dir_okay=False),
]


def handle_errors(fn: F) -> F:
    """Print known errors as ``Error: ...`` on stderr and exit 1; tracebacks only with SC_DATA_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ScDataError as e:
            if os.environ.get(DEBUG_ENV):
                raise
            stderr.print(f"[bold red]Error:[/bold red] {escape(str(e))}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (no rich markup, so it can be piped)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
