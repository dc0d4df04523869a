"""`sc-data eval`: held-out preference metrics of a run against its initial model, and safety rates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    handle_errors,
    needs_extra,
    print_json,
    stderr,
    stdout,
)
from sc_data.config import load_config, parse_assignments
from sc_data.train.evaluate import EvalConfig, evaluate

FLAGS = ConfigFlags(
    EvalConfig,
    split="split", prompts="prompts", prompt_kind="prompt_kind", max_new_tokens="max_new_tokens",
    batch_size="batch_size", device="device", plots="plots",
)
Split = FLAGS.choices("split")
PromptKind = FLAGS.choices("prompt_kind")
Device = FLAGS.choices("device")


@handle_errors
def eval_command(
    run: Annotated[Path, typer.Argument(help="Training run folder (from `sc-data train`).", exists=True, file_okay=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="Staged dataset folder or Hub dataset ORG/NAME[@REV].")],
    split: Annotated[Split | None, FLAGS.option("split")] = None,
    prompts: Annotated[Path | None, FLAGS.option("prompts", exists=True, dir_okay=False)] = None,
    prompt_kind: Annotated[PromptKind | None, FLAGS.option("prompt_kind")] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option(
            "--judge", metavar="KEY=VALUE",
            help="Judge the generated answers with the judge scorer; one of its options, repeatable "
            "(e.g. --judge backend=local). Without it: refusal strings only.",
        ),
    ] = None,
    generator: Annotated[
        list[str] | None,
        typer.Option(
            "--generator", metavar="KEY=VALUE",
            help="Generate the answers on a served engine running the run's final/ model (OpenAI-compatible); "
            "repeatable, e.g. --generator base_url=http://localhost:8000/v1 --generator model=run-final.",
        ),
    ] = None,
    max_new_tokens: Annotated[int | None, FLAGS.option("max_new_tokens", min=1)] = None,
    batch_size: Annotated[int | None, FLAGS.option("batch_size", min=1)] = None,
    device: Annotated[Device | None, FLAGS.option("device")] = None,
    plots: Annotated[bool | None, FLAGS.option("plots", "--plots/--no-plots")] = None,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a run: pairwise accuracy and margins vs the initial model, per tier and category.

    Examples:

      sc-data eval runs/sc --data staged/

      sc-data eval runs/sc --data staged/ --prompts xstest.csv --prompt-kind benign --json

      sc-data eval runs/sc --data staged/ --prompts advbench.csv --judge backend=local

      sc-data eval runs/sc --data staged/ --prompts advbench.csv --generator base_url=http://localhost:8000/v1 --generator model=sc
    """
    judge_options = parse_assignments(judge or [], flag="--judge", example="backend=local")
    generator_options = parse_assignments(generator or [], flag="--generator", example="base_url=http://localhost:8000/v1")
    given = {**FLAGS.overrides(locals()), **{f"judge.{k}": v for k, v in judge_options.items()},
             **{f"generator.{k}": v for k, v in generator_options.items()}}
    options = load_config(config, given)
    stderr.print(f"Evaluating {run} on {data} ({options.get('split', 'eval')})")
    with needs_extra("train"):  # the run's policy and initial model (a LoRA run loads peft)
        result = evaluate(run, data, **options)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{run}: {result['split']} split, policy vs initial model (results in {run / 'eval.json'})")
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
