"""``sc-data judge fit``: fit the probe judge on labelled answers (then score with ``--option judge.backend=probe``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    OutputDir,
    choice_enum,
    handle_errors,
    print_json,
    stderr,
    stdout,
)
from sc_data.config import load_config
from sc_data.ingest import parse_column_map
from sc_data.ingest.formats import FORMAT_NAMES
from sc_data.scorers.probe import JudgeFitConfig

FLAGS = ConfigFlags(
    JudgeFitConfig, encoder="recipe.encoder", kind="recipe.kind", layer="recipe.layer", max_length="recipe.max_length",
    c="fit.c", folds="fit.folds", seed="fit.seed", device="fit.device", batch_size="fit.batch_size",
)
Kind = FLAGS.choices("kind")
Device = FLAGS.choices("device")
Format = choice_enum("Format", FORMAT_NAMES)

app = typer.Typer(help="The probe judge: fit it on labelled answers.", no_args_is_help=True, rich_markup_mode=None)


@app.command("fit")
@handle_errors
def fit_command(
    inputs: Annotated[list[str], typer.Argument(help="Labelled sets: PKU-SafeRLHF files, pairs with safety flags, or answer tables.", show_default=False)],
    output: OutputDir,
    encoder: Annotated[str | None, FLAGS.option("encoder")] = None,
    kind: Annotated[Kind | None, FLAGS.option("kind")] = None,
    layer: Annotated[int | None, FLAGS.option("layer")] = None,
    max_length: Annotated[int | None, FLAGS.option("max_length", min=16)] = None,
    c: Annotated[float | None, FLAGS.option("c", "--c")] = None,
    folds: Annotated[int | None, FLAGS.option("folds", min=2)] = None,
    seed: Annotated[int | None, FLAGS.option("seed")] = None,
    device: Annotated[Device | None, FLAGS.option("device")] = None,
    batch_size: Annotated[int | None, FLAGS.option("batch_size", min=1)] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Layout of pair inputs (as for ingest).")] = Format("auto"),  # noqa: A002
    column_map: Annotated[list[str] | None, typer.Option("--map", metavar="CANONICAL=SOURCE", help="canonical=source column, repeatable: --map answer=response --map severity=level.")] = None,
    assume_chosen_safe: Annotated[bool, typer.Option(help="Label pairs without safety flags chosen = safe, rejected = unsafe.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing probe folder.")] = False,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit a linear probe on an encoder's features of labelled answers; report prompt-grouped cross-validation.

    Examples:

        sc-data judge fit pku_saferlhf.jsonl -o probe/

        sc-data judge fit pku.jsonl examples/pairs.jsonl -o probe/ --layer 16

        sc-data judge fit rated.csv -o probe/ --map answer=response --map severity=level --kind sentence --encoder all-minilm-l6-v2

        sc-data score pairs.parquet -o scored.parquet -s judge --option judge.backend=probe --option judge.probe=probe/
    """
    from sc_data.scorers.probe import judge_fit

    cfg = JudgeFitConfig(**load_config(config, FLAGS.overrides(locals())))
    stderr.print(f"Fitting the probe judge on {len(inputs)} input(s) with {cfg.recipe.encoder} ({cfg.recipe.kind})")
    result = judge_fit(inputs, output, cfg, fmt=format.value, column_map=parse_column_map(column_map) or None,
                       assume_chosen_safe=assume_chosen_safe, overwrite=overwrite)
    if as_json:
        print_json(result.to_dict())
        return
    cv = result.cross_validation
    table = Table(title=f"probe -> {Path(result.output)}: {cv['folds']}-fold cross-validation grouped by prompt")
    for col in ("group", "answers", "unsafe", "AUROC p_unsafe", "Spearman severity"):
        table.add_column(col, justify="right")

    def row(name: str, s: dict) -> None:
        auroc, rho = s.get("auroc"), s.get("spearman_severity")
        table.add_row(name, str(s["answers"]), str(s["unsafe"]), "-" if auroc is None else f"{auroc:.3f}", "-" if rho is None else f"{rho:.3f}")

    row("overall", cv["overall"])
    for name, s in cv["by_source"].items():
        row(f"source {name}", s)
    stdout.print(table)


def register(root: typer.Typer) -> None:
    """Add ``judge`` (with ``fit``) to the app."""
    root.add_typer(app, name="judge")
