"""`sc-data stage`: score columns -> difficulty -> eval split -> tiers -> staged dataset folder."""

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
    handle_errors,
    print_json,
    stderr,
    stdout,
)
from sc_data.config import load_config
from sc_data.errors import ConfigError
from sc_data.stage.config import StageConfig
from sc_data.stage.export import ExportConfig
from sc_data.stage.pipeline import stage

STAGE = ConfigFlags(
    StageConfig,
    strategy="strategy", tiers="tiers", cuts="cuts", threshold_column="threshold_column",
    eval_fraction="eval_fraction", dev_fraction="dev_fraction", budget="budget", budget_mode="budget_mode",
    stratify="stratify", per_category="per_category", missing="missing", difficulty_column="difficulty_columns",
    seed="seed", near_duplicates="near_duplicates",
)
EXPORT = ConfigFlags(ExportConfig, max_shard_rows="max_shard_rows", plots="plots")
Strategy = STAGE.choices("strategy")
BudgetMode = STAGE.choices("budget_mode")
Stratify = STAGE.choices("stratify")
Missing = STAGE.choices("missing")


def _cuts(text: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",") if c.strip()]
    except ValueError as e:
        raise ConfigError(f"--cuts {text!r}: write comma-separated numbers, e.g. --cuts 0.3,0.7") from e


@handle_errors
def stage_command(
    scored: Annotated[Path, typer.Argument(help="Scored Parquet file (or folder of parts) from `sc-data score`.", exists=True)],
    output: OutputDir,
    strategy: Annotated[Strategy | None, STAGE.option("strategy")] = None,
    tiers: Annotated[int | None, STAGE.option("tiers", "--tiers", "-k", min=1)] = None,
    cuts: Annotated[str | None, STAGE.option("cuts", metavar="X,Y,...")] = None,
    threshold_column: Annotated[str | None, STAGE.option("threshold_column")] = None,
    eval_fraction: Annotated[float | None, STAGE.option("eval_fraction")] = None,
    dev_fraction: Annotated[float | None, STAGE.option("dev_fraction")] = None,
    budget: Annotated[float | None, STAGE.option("budget")] = None,
    budget_mode: Annotated[BudgetMode | None, STAGE.option("budget_mode")] = None,
    stratify: Annotated[Stratify | None, STAGE.option("stratify")] = None,
    per_category: Annotated[bool | None, STAGE.option("per_category", "--per-category/--global")] = None,
    missing: Annotated[Missing | None, STAGE.option("missing")] = None,
    difficulty_column: Annotated[list[str] | None, STAGE.option("difficulty_column", metavar="COL[:DIR][=W]")] = None,
    seed: Annotated[int | None, STAGE.option("seed")] = None,
    near_duplicates: Annotated[float | None, STAGE.option("near_duplicates", metavar="OVERLAP")] = None,
    max_shard_rows: Annotated[int | None, EXPORT.option("max_shard_rows", min=1)] = None,
    plots: Annotated[bool | None, EXPORT.option("plots", "--plots/--no-plots")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Split scored pairs into curriculum tiers and write the staged dataset folder.

    Examples:

      sc-data stage scored.parquet -o staged/

      sc-data stage scored.parquet -o staged/ --tiers 4 --budget 0.75 --stratify category --near-duplicates 0.6

      sc-data stage scored.parquet -o staged/ --difficulty-column judge__severity:easier=2 --difficulty-column ref_margin__margin_mean
    """
    given = {**locals(), "cuts": _cuts(cuts) if cuts is not None else None}
    options = load_config(config, {**STAGE.overrides(given), **EXPORT.overrides(given)})
    stderr.print(f"Staging {scored} -> {output}")
    result = stage(scored, output, overwrite=overwrite, **options)
    for message in result.warnings:
        stderr.print(f"[yellow]Warning:[/yellow] {message}", highlight=False)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"Staged {result.rows_out} pairs into {output} ({result.rows_rejected} rejected)")
    table.add_column("tier")
    table.add_column("rows", justify="right")
    table.add_column("mean difficulty", justify="right")
    for tier, rows in result.tiers.items():
        table.add_row(tier, str(rows), f"{result.mean_difficulty[tier]:.3f}")
    for split, rows in result.splits.items():
        if split != "train":
            table.add_row(f"({split})", str(rows), "")
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add `sc-data stage` to ``app``."""
    app.command("stage")(stage_command)
