"""`sc-data score` (run scorers over a pairs table) and `sc-data scorers` (list them)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    JsonFlag,
    OutputFile,
    handle_errors,
    print_json,
    stderr,
    stdout,
)
from sc_data.config import parse_assignments
from sc_data.errors import ConfigError
from sc_data.scorers.runner import DEFAULT_PART_ROWS, describe_scorers, score


def _parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["ref_margin.max_length=512"]`` -> ``{"ref_margin": {"max_length": 512}}`` (values read as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    parsed = parse_assignments(items, flag="--option", form="SCORER.KEY=VALUE", example="ref_margin.max_length=512", dotted=True)
    for key, value in parsed.items():
        scorer, _, name = key.partition(".")
        out.setdefault(scorer, {})[name] = value
    return out


def _model_options(scorers: list[str], model: str, options: dict[str, dict[str, Any]]) -> None:
    """Apply ``--model`` to every given scorer that has a ``model`` option."""
    from sc_data.scorers.base import get_scorer_class

    for name in scorers:
        if "model" in get_scorer_class(name).Options.model_fields:
            options.setdefault(name, {}).setdefault("model", model)


class _RateProgress:
    """A rich progress bar on stderr showing pairs/s (rank 0 only under torchrun)."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} pairs/s"),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
            disable=not stderr.is_terminal,
        )
        self._task: Any = None
        self._t0 = 0.0
        self._first = 0

    def __enter__(self) -> _RateProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._bar.add_task("score", total=total, rate="-")
            self._t0, self._first = time.perf_counter(), done
        elapsed = time.perf_counter() - self._t0
        rate = f"{(done - self._first) / elapsed:.1f}" if elapsed > 0 and done > self._first else "-"
        self._bar.update(self._task, completed=done, total=total, rate=rate)


@handle_errors
def score_command(
    input: Annotated[Path, typer.Argument(help="Canonical pairs Parquet from `sc-data ingest`.", dir_okay=False)],
    output: OutputFile,
    scorer: Annotated[
        list[str] | None, typer.Option("--scorer", "-s", metavar="NAME", help="Scorer to run, repeatable (see `sc-data scorers`).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model (alias, folder, .gguf or hub id) for every model-based scorer given.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", metavar="SCORER.KEY=VALUE", help="Scorer option SCORER.KEY=VALUE, repeatable; wins over --config.")
    ] = None,
    config: ConfigFile = None,
    part_rows: Annotated[int, typer.Option(help="Rows per part file (the resume granularity).", min=1)] = DEFAULT_PART_ROWS,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its part files.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output that sc-data wrote.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score preference pairs for difficulty and write the scored Parquet plus its manifest.

    Examples:

      sc-data score pairs.parquet -o scored.parquet --scorer ref_margin

      sc-data score pairs.parquet -o scored.parquet -s ref_margin --model ./my-sft-model --option ref_margin.max_length=512

      torchrun --nproc_per_node 2 $(which sc-data) score pairs.parquet -o scored.parquet -s ref_margin --resume
    """

    names = list(scorer or [])
    options = _parse_options(list(option or []))
    if model is not None:
        if not names:
            raise ConfigError("--model needs at least one --scorer to apply to")
        _model_options(names, model, options)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0 and not as_json:
        with _RateProgress() as bar:
            result = score(input, output, scorers=names, options=options, part_rows=part_rows, resume=resume, overwrite=overwrite, config_file=config, progress=bar)
    else:
        result = score(input, output, scorers=names, options=options, part_rows=part_rows, resume=resume, overwrite=overwrite, config_file=config)
    if not rank0:
        return
    summary = {
        "output": str(result.output),
        "manifest": str(result.manifest),
        "rows": result.rows,
        "errors": result.errors,
        "resumed_rows": result.resumed_rows,
        "world_size": result.world_size,
    }
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"scored {result.rows} pairs -> {result.output}")
    table.add_column("scorer")
    table.add_column("rows with error", justify="right")
    for name, count in result.errors.items():
        table.add_row(name, str(count))
    stdout.print(table)
    stdout.print(f"manifest: {result.manifest}")


@handle_errors
def scorers_command(as_json: JsonFlag = False) -> None:
    """List the registered scorers with their columns, difficulty column, direction and options.

    Examples:

      sc-data scorers

      sc-data scorers --json
    """
    info = describe_scorers()
    if as_json:
        print_json(info)
        return
    table = Table(title="scorers")
    for col in ("name", "difficulty column", "direction", "columns", "options"):
        table.add_column(col)
    for item in info:
        if "error" in item:
            table.add_row(item["name"], "-", "-", f"unavailable: {item['error']}", "-")
            continue
        options = ", ".join(f"{k}={v!r}" for k, v in item["options"].items())
        table.add_row(item["name"], item["difficulty_column"], item["direction"], "\n".join(item["columns"]), options)
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add `score` and `scorers` to the app."""
    app.command("score")(score_command)
    app.command("scorers")(scorers_command)
