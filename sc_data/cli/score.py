"""`sc-data score` (run scorers over a pairs table) and `sc-data scorers` (list them)."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    OutputFile,
    choice_enum,
    handle_errors,
    print_json,
    show_progress,
    stderr,
    stdout,
)
from sc_data.cli.ingest import quiet_hub_bars
from sc_data.config import parse_assignments
from sc_data.errors import ConfigError
from sc_data.ingest import IngestOptions, make_options, parse_column_map
from sc_data.ingest.formats import FORMAT_NAMES
from sc_data.scorers.runner import DEFAULT_PART_ROWS, describe_scorers, score

#: The ingest options a raw input is read with (the same flags as `sc-data ingest`).
INGEST = ConfigFlags(
    IngestOptions, format="format", prefer="prefer", safety_pairs="safety_pairs", split="split", subset="subset",
    revision="revision", streaming="streaming", license_id="license",
)
Format = choice_enum("Format", FORMAT_NAMES)
Prefer = INGEST.choices("prefer")
SafetyPairs = INGEST.choices("safety_pairs")


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
            disable=not show_progress(),
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
    inputs: Annotated[
        list[str],
        typer.Argument(help="Raw preference files or Hub datasets ORG/NAME[@REV] in any layout ingest reads, or a canonical pairs Parquet.", show_default=False),
    ],
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
    format: Annotated[Format | None, INGEST.option("format", "--format", "-f")] = None,  # noqa: A002
    column_map: Annotated[list[str] | None, typer.Option("--map", metavar="CANONICAL=SOURCE", help="Raw inputs: canonical=source column, repeatable (as for ingest).")] = None,
    prefer: Annotated[Prefer | None, INGEST.option("prefer")] = None,
    safety_pairs: Annotated[SafetyPairs | None, INGEST.option("safety_pairs")] = None,
    split: Annotated[str | None, INGEST.option("split")] = None,
    subset: Annotated[str | None, INGEST.option("subset")] = None,
    revision: Annotated[str | None, INGEST.option("revision")] = None,
    streaming: Annotated[bool | None, INGEST.option("streaming", "--streaming/--no-streaming")] = None,
    license_id: Annotated[str | None, INGEST.option("license_id", "--license", metavar="ID")] = None,
    part_rows: Annotated[int, typer.Option(help="Rows per part file (the resume granularity).", min=1)] = DEFAULT_PART_ROWS,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its part files.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output that sc-data wrote.")] = False,
    max_error_rate: Annotated[float | None, typer.Option(
        help="Exit non-zero (after writing everything) when a scorer errs on more than this share of rows; default: only when it errs on every row.",
        min=0.0, max=1.0, show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score preference pairs for difficulty and write the scored Parquet plus its manifest.

    Raw inputs are ingested on the way in (into <output stem>.pairs.parquet, rejects beside it).

    Examples:

      sc-data score pku_saferlhf.jsonl -o scored.parquet --scorer ref_margin --scorer judge

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
    given = {k: v for k, v in INGEST.overrides(locals()).items() if v is not None}
    quiet_hub_bars()
    if column_map:
        given["column_map"] = parse_column_map(column_map)
    ingest = make_options(**given) if given else None
    rank0 = int(os.environ.get("RANK", "0")) == 0
    run = {"scorers": names, "options": options, "part_rows": part_rows, "resume": resume, "overwrite": overwrite,
           "config_file": config, "ingest": ingest, "max_error_rate": max_error_rate}
    if rank0 and not as_json:
        with _RateProgress() as bar:
            result = score(inputs, output, **run, progress=bar)
    else:
        result = score(inputs, output, **run)
    if not rank0:
        return
    summary = {
        "output": str(result.output),
        "manifest": str(result.manifest),
        "pairs": str(result.pairs),
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
    for item in info:
        if "error" in item:
            stdout.print(f"[bold]{item['name']}[/bold]  unavailable: {escape(item['error'])}\n")
            continue
        stdout.print(f"[bold]{item['name']}[/bold]  difficulty: {item['difficulty_column']} ({item['direction'].replace('_', ' ')})")
        stdout.print(Padding("columns: " + ", ".join(item["columns"]), (0, 0, 0, 2)))
        options = ", ".join(f"{k}={v!r}" for k, v in item["options"].items())
        stdout.print(Padding(escape(f"options: {options}"), (0, 0, 1, 2)))


def register(app: typer.Typer) -> None:
    """Add `score` and `scorers` to the app."""
    app.command("score")(score_command)
    app.command("scorers")(scorers_command)
