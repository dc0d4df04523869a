"""``sc-data decontaminate``: drop the pairs whose prompt is (nearly) a prompt of an eval set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    OutputFile,
    counting,
    handle_errors,
    print_json,
    stdout,
)
from sc_data.cli.ingest import quiet_hub_bars
from sc_data.config import load_config
from sc_data.decontam.pipeline import DecontamOptions, decontaminate, make_decontam_options

FLAGS = ConfigFlags(
    DecontamOptions, ngram="ngram", threshold="threshold", embedding="embedding",
    embedding_threshold="embedding_threshold", encoder="encoder", device="device",
)


@handle_errors
def decontaminate_command(
    input: Annotated[Path, typer.Argument(help="Pairs or scored Parquet (what ingest or score wrote).", dir_okay=False, show_default=False)],  # noqa: A002
    against: Annotated[list[str], typer.Option("--against", "-a", metavar="EVAL", help="Eval set, repeatable: a pair file ingest reads, a CSV/JSONL/Parquet with a 'prompt' column, a .txt file (one prompt per line), a save_to_disk folder or a Hub dataset ORG/NAME[@REV][:[CONFIG/]SPLIT].", show_default=False)],
    output: OutputFile,
    ngram: Annotated[int | None, FLAGS.option("ngram", min=1)] = None,
    threshold: Annotated[float | None, FLAGS.option("threshold", min=0.0, max=1.0)] = None,
    embedding: Annotated[bool | None, FLAGS.option("embedding", "--embedding/--no-embedding")] = None,
    embedding_threshold: Annotated[float | None, FLAGS.option("embedding_threshold", min=0.0, max=1.0)] = None,
    encoder: Annotated[str | None, FLAGS.option("encoder")] = None,
    device: Annotated[str | None, FLAGS.option("device")] = None,
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Rejects Parquet; default <output stem>.rejects.parquet.", dir_okay=False)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs that sc-data wrote.")] = False,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove pairs whose prompt matches an eval set's (exact, n-gram, embedding); they go to the rejects.

    Examples:

        sc-data decontaminate pairs.parquet --against harmless-base-test.jsonl.gz -o clean.parquet

        sc-data decontaminate scored.parquet -a xstest_prompts.csv -a advbench.txt -o clean.parquet --embedding

        sc-data decontaminate pairs.parquet -a PKU-Alignment/PKU-SafeRLHF@main:default/test -o clean.parquet
    """
    quiet_hub_bars()
    options = make_decontam_options(**load_config(config, FLAGS.overrides(locals())))
    with counting("decontaminating", "pairs") as progress:
        result = decontaminate(input, against, output, rejects=rejects, options=options, overwrite=overwrite, progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"decontaminate -> {result.output} ({result.rows_in:,} in, {result.rows_out:,} out)")
    for name in ("eval set", "layout", "items", "unreadable", "pairs removed"):
        table.add_column(name, justify="left" if name in ("eval set", "layout") else "right")
    for s in result.eval_sets:
        table.add_row(s["path"], s["layout"], f"{s['items']:,}", f"{s['unreadable']:,}", f"{result.by_eval_set.get(s['path'], 0):,}")
    stdout.print(table)
    methods = ", ".join(f"{m} {n:,}" for m, n in sorted(result.by_method.items())) or "none"
    stdout.print(f"removed by method: {methods} -> {result.rejects}")


def register(app: typer.Typer) -> None:
    """Add ``decontaminate`` to the app."""
    app.command("decontaminate")(decontaminate_command)
