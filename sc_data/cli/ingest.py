"""``sc-data ingest``: raw preference files -> the canonical pairs Parquet (+ rejects, manifest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    OutputFile,
    choice_enum,
    counting,
    handle_errors,
    print_json,
    show_progress,
    stdout,
)
from sc_data.config import load_config
from sc_data.ingest import IngestOptions, ingest, make_options, parse_column_map
from sc_data.ingest.formats import FORMAT_NAMES

FLAGS = ConfigFlags(
    IngestOptions, format="format", prefer="prefer", safety_pairs="safety_pairs", dedup="dedup", max_chars="max_chars",
    split="split", subset="subset", revision="revision", streaming="streaming", license_id="license",
)
Format = choice_enum("Format", FORMAT_NAMES)
Prefer = FLAGS.choices("prefer")
SafetyPairs = FLAGS.choices("safety_pairs")


def quiet_hub_bars() -> None:
    """Off a terminal, keep `datasets` / `huggingface_hub` download bars out of stderr (set before they are imported)."""
    if not show_progress():
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@handle_errors
def ingest_command(
    inputs: Annotated[list[str], typer.Argument(help="Files (JSONL/JSON/CSV/Parquet, .gz/.zst ok), save_to_disk folders or Hub datasets ORG/NAME[@REV].", show_default=False)],
    output: OutputFile,
    format: Annotated[Format | None, FLAGS.option("format", "--format", "-f")] = None,  # noqa: A002
    column_map: Annotated[list[str] | None, typer.Option("--map", metavar="CANONICAL=SOURCE", help="canonical=source column, repeatable: --map prompt=question --map chosen=good.")] = None,
    prefer: Annotated[Prefer | None, FLAGS.option("prefer")] = None,
    safety_pairs: Annotated[SafetyPairs | None, FLAGS.option("safety_pairs")] = None,
    dedup: Annotated[bool | None, FLAGS.option("dedup", "--dedup/--no-dedup")] = None,
    max_chars: Annotated[int | None, FLAGS.option("max_chars", min=1)] = None,
    split: Annotated[str | None, FLAGS.option("split")] = None,
    subset: Annotated[str | None, FLAGS.option("subset")] = None,
    revision: Annotated[str | None, FLAGS.option("revision")] = None,
    streaming: Annotated[bool | None, FLAGS.option("streaming", "--streaming/--no-streaming")] = None,
    license_id: Annotated[str | None, FLAGS.option("license_id", "--license", metavar="ID")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs that sc-data wrote.")] = False,
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Rejects Parquet; default <output stem>.rejects.parquet.", dir_okay=False)] = None,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Read raw preference data into the canonical pairs table; bad rows go to a rejects file.

    Examples:

        sc-data ingest hh_rlhf_clean_gpt.jsonl -o pairs.parquet

        sc-data ingest harmless-base-test.jsonl.gz pku.jsonl -o pairs.parquet --safety-pairs flag

        sc-data ingest qa.csv -o pairs.parquet --map prompt=question --map chosen=good --map rejected=bad

        sc-data ingest PKU-Alignment/PKU-SafeRLHF -o pku-train.parquet --subset default --split train --streaming

        sc-data ingest my-pku-layout.jsonl -o pairs.parquet --license apache-2.0
    """
    given = {**FLAGS.overrides(locals()), "column_map": parse_column_map(column_map)}
    quiet_hub_bars()
    options = make_options(**load_config(config, given))
    with counting("ingesting", "records") as progress:
        result = ingest(inputs, output, rejects=rejects, options=options, overwrite=overwrite, progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"ingest -> {result.output}")
    table.add_column("input")
    table.add_column("format")
    for name in ("in", "out", "rejected"):
        table.add_column(name, justify="right")
    for report in result.inputs:
        table.add_row(report.path, report.format or "-", f"{report.rows_in:,}", f"{report.rows_out:,}", f"{report.rows_rejected:,}")
    table.add_row("[bold]total", "", f"{result.rows_in:,}", f"{result.rows_out:,}", f"{result.rows_rejected:,}")
    stdout.print(table)
    if result.by_reason:
        reasons = Table(title=f"rejected by reason -> {result.rejects}")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        for reason, count in sorted(result.by_reason.items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, f"{count:,}")
        stdout.print(reasons)


def register(app: typer.Typer) -> None:
    """Add ``ingest`` to the app."""
    app.command("ingest")(ingest_command)
