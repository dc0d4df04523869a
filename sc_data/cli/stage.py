"""`sc-data stage`: score columns -> difficulty -> eval split -> tiers -> staged dataset folder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    JsonFlag,
    OutputDir,
    handle_errors,
    print_json,
    stderr,
    stdout,
)
from sc_data.errors import ConfigError


class StrategyChoice(str, Enum):
    equal = "equal"
    quantile = "quantile"
    threshold = "threshold"
    kmeans = "kmeans"


class BudgetModeChoice(str, Enum):
    uniform = "uniform"
    easiest = "easiest"
    hardest = "hardest"


class StratifyChoice(str, Enum):
    none = "none"
    category = "category"


class MissingChoice(str, Enum):
    drop = "drop"
    hardest = "hardest"
    easiest = "easiest"


def _options_from_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def _cuts(text: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",") if c.strip()]
    except ValueError as e:
        raise ConfigError(f"--cuts {text!r}: write comma-separated numbers, e.g. --cuts 0.3,0.7") from e


@handle_errors
def stage_command(
    scored: Annotated[Path, typer.Argument(help="Scored Parquet file (or folder of parts) from `sc-data score`.", exists=True)],
    output: OutputDir,
    strategy: Annotated[
        StrategyChoice | None, typer.Option(help="Tiering strategy [default: equal, the paper's]."),
    ] = None,
    tiers: Annotated[int | None, typer.Option("--tiers", "-k", help="Number of tiers K [default: 3].", min=1)] = None,
    cuts: Annotated[str | None, typer.Option(help="Cut points, comma-separated: quantiles in (0,1) for quantile, raw values for threshold.")] = None,
    threshold_column: Annotated[str | None, typer.Option(help="Raw score column for --strategy threshold, COL[:easier|harder].")] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="Share held out as the test split [default: 0.2].")] = None,
    dev_fraction: Annotated[float | None, typer.Option(help="Share carved from training as a dev split (Cat-DPO) [default: 0].")] = None,
    budget: Annotated[float | None, typer.Option(help="Fraction of training pairs kept [default: 1.0].")] = None,
    budget_mode: Annotated[
        BudgetModeChoice | None, typer.Option(help="Which pairs the budget keeps [default: uniform].")
    ] = None,
    stratify: Annotated[
        StratifyChoice | None, typer.Option(help="Keep each category's share equal across tiers [default: none].")
    ] = None,
    per_category: Annotated[bool | None, typer.Option("--per-category/--global", help="Rank difficulty within each category.")] = None,
    missing: Annotated[
        MissingChoice | None, typer.Option(help="Rows with a missing score [default: drop, to rejects].")
    ] = None,
    difficulty_column: Annotated[
        list[str] | None,
        typer.Option(metavar="COL[:DIR][=W]", help="COL[:easier|harder][=weight], repeatable [default: every known scorer's column present]."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same result [default: 42].")] = None,
    max_shard_rows: Annotated[int | None, typer.Option(help="Rows per Parquet shard at most [default: 100000].", min=1)] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the report plots in the card.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Split scored pairs into curriculum tiers and write the staged dataset folder.

    Examples:

      sc-data stage scored.parquet -o staged/

      sc-data stage scored.parquet -o staged/ --tiers 4 --budget 0.75 --stratify category

      sc-data stage scored.parquet -o staged/ --difficulty-column judge__severity:easier=2 --difficulty-column ref_margin__margin_mean
    """
    from sc_data.stage.pipeline import stage

    given = {
        "strategy": strategy.value if strategy else None,
        "tiers": tiers,
        "cuts": _cuts(cuts) if cuts is not None else None,
        "threshold_column": threshold_column,
        "eval_fraction": eval_fraction,
        "dev_fraction": dev_fraction,
        "budget": budget,
        "budget_mode": budget_mode.value if budget_mode else None,
        "stratify": stratify.value if stratify else None,
        "per_category": per_category,
        "missing": missing.value if missing else None,
        "difficulty_columns": difficulty_column or None,
        "seed": seed,
        "max_shard_rows": max_shard_rows,
        "plots": False if no_plots else None,
    }
    options = {**_options_from_yaml(config), **{k: v for k, v in given.items() if v is not None}}
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
