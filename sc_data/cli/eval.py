"""`sc-data eval`: held-out preference metrics of a run against its initial model, and safety rates."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sc_data.cli._common import JsonFlag, handle_errors, print_json, stderr, stdout
from sc_data.errors import ConfigError


class SplitChoice(str, Enum):
    eval = "eval"
    dev = "dev"
    train = "train"


class PromptKind(str, Enum):
    harmful = "harmful"
    benign = "benign"


@handle_errors
def eval_command(
    run: Annotated[Path, typer.Argument(help="Training run folder (from `sc-data train`).", exists=True, file_okay=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="Staged dataset folder or Hub dataset ORG/NAME[@REV].")],
    split: Annotated[SplitChoice, typer.Option(help="Which split of the staged data to score.")] = SplitChoice.eval,
    prompts: Annotated[Path | None, typer.Option(help="CSV/JSONL prompt file (a 'prompt' column) for generation.", exists=True, dir_okay=False)] = None,
    prompt_kind: Annotated[PromptKind, typer.Option(help="harmful (harmful-response rate) or benign (over-refusal rate).")] = PromptKind.harmful,
    judge: Annotated[str | None, typer.Option(help="JSON options of the judge scorer, e.g. '{\"backend\": \"local\"}'; default: refusal strings only.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length.", min=1)] = 64,
    batch_size: Annotated[int, typer.Option(help="Pairs / prompts per forward pass.", min=1)] = 8,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps.")] = "auto",
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a run: pairwise accuracy and margins vs the initial model, per tier and category.

    Examples:

      sc-data eval runs/sc --data staged/

      sc-data eval runs/sc --data staged/ --prompts xstest.csv --prompt-kind benign --json
    """
    from sc_data.train.evaluate import evaluate

    try:
        judge_options = json.loads(judge) if judge else None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--judge {judge!r} is not valid JSON ({e}); pass e.g. '{{\"backend\": \"local\"}}'") from e
    stderr.print(f"Evaluating {run} on {data} ({split.value})")
    result = evaluate(
        run, data, split=split.value, device=device, batch_size=batch_size, prompts=prompts, prompt_kind=prompt_kind.value,
        judge=judge_options, max_new_tokens=max_new_tokens, plots=not no_plots,
    )
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{run}: {split.value} split, policy vs initial model (results in {run / 'eval.json'})")
    for col in ("group", "n", "accuracy", "margin sep.", "ref-free margin", "ref-free margin (π₀)"):
        table.add_column(col, justify="right")
    groups = {"overall": result["overall"], **result["by_tier"], **result["by_category"]}
    for name, s in groups.items():
        table.add_row(name, str(s["n"]), f"{s['accuracy']:.3f}", f"{s['margin_separation']:.3f}",
                      f"{s['reference_free_margin']:.3f}", f"{s['before']['reference_free_margin']:.3f}")
    stdout.print(table)
    if "generation" in result:
        gen = result["generation"]
        stdout.print({k: v for k, v in gen.items() if k != "samples"})


def register(app: typer.Typer) -> None:
    """Add `sc-data eval` to ``app``."""
    app.command("eval")(eval_command)
