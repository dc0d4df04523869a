"""`sc-data train`: curriculum DPO training on a staged dataset (Staged-Competence, Cat-DPO)."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
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


class ScheduleChoice(str, Enum):
    shuffled = "shuffled"
    sqrt_pacing = "sqrt_pacing"
    sequential = "sequential"
    curri_dpo = "curri_dpo"
    staged_competence = "staged_competence"


class LossChoice(str, Enum):
    sigmoid = "sigmoid"
    ipo = "ipo"
    hinge = "hinge"
    cdpo = "cdpo"
    robust = "robust"


def _opt(help_text: str, *names: str) -> Any:
    return typer.Option(*names, help=help_text, show_default=False)


@handle_errors
def train_command(
    data: Annotated[str, typer.Argument(help="Staged dataset folder (from `sc-data stage`) or Hub dataset ORG/NAME[@REV].")],
    output: OutputDir,
    model: Annotated[str | None, _opt("Model: hub id, local folder, .gguf or alias [default: smollm2-135m-instruct].", "--model", "-m")] = None,
    schedule: Annotated[ScheduleChoice | None, _opt("Curriculum schedule [default: staged_competence].", "--schedule")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in the output folder.")] = False,
    max_steps_per_stage: Annotated[int | None, _opt("Cap optimizer steps per stage (demos, smoke tests).", "--max-steps-per-stage")] = None,
    epochs_per_stage: Annotated[float | None, _opt("Passes over each stage [default: 5].", "--epochs-per-stage")] = None,
    competence: Annotated[str | None, _opt("Competence function: sqrt | linear [default: sqrt].", "--competence")] = None,
    horizon: Annotated[float | None, _opt("Competence horizon, fraction of a stage's steps [default: 1.0].", "--horizon")] = None,
    ref_update: Annotated[str | None, _opt("Reference update: hard | tr_dpo | none [default: hard].", "--ref-update")] = None,
    loss: Annotated[LossChoice | None, _opt("Preference loss [default: sigmoid].", "--loss")] = None,
    beta: Annotated[float | None, _opt("DPO beta [default: 0.1].", "--beta")] = None,
    label_smoothing: Annotated[float | None, _opt("Label smoothing for cdpo / robust [default: 0].", "--label-smoothing")] = None,
    sft_weight: Annotated[float | None, _opt("Weight of an SFT term on chosen [default: 0].", "--sft-weight")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapter or full fine-tune [default: LoRA].", show_default=False)] = None,
    lora_r: Annotated[int | None, _opt("LoRA rank [default: 16].", "--lora-r")] = None,
    lora_alpha: Annotated[float | None, _opt("LoRA alpha [default: 32].", "--lora-alpha")] = None,
    lora_dropout: Annotated[float | None, _opt("LoRA dropout [default: 0.05].", "--lora-dropout")] = None,
    lr: Annotated[float | None, _opt("Peak learning rate [default: 5e-5].", "--lr")] = None,
    lr_schedule: Annotated[str | None, _opt("cosine | linear | constant, per stage [default: cosine].", "--lr-schedule")] = None,
    warmup_ratio: Annotated[float | None, _opt("Warm-up fraction of each stage [default: 0.1].", "--warmup-ratio")] = None,
    effective_batch: Annotated[int | None, _opt("Pairs per optimizer step over all processes [default: 32].", "--effective-batch")] = None,
    micro_batch: Annotated[int | None, _opt("Pairs per forward pass [default: 4].", "--micro-batch")] = None,
    max_length: Annotated[int | None, _opt("Max prompt + answer tokens [default: 1024].", "--max-length")] = None,
    max_prompt_length: Annotated[int | None, _opt("Max prompt tokens [default: 512].", "--max-prompt-length")] = None,
    cat_dpo: Annotated[bool | None, typer.Option("--cat-dpo/--no-cat-dpo", help="Category-adaptive margins (needs a dev split).", show_default=False)] = None,
    checkpoint_every: Annotated[int | None, _opt("Also checkpoint every N optimizer steps.", "--checkpoint-every")] = None,
    device: Annotated[str | None, _opt("auto | cpu | cuda | mps [default: auto].", "--device")] = None,
    dtype: Annotated[str | None, _opt("auto | float32 | bfloat16 [default: auto].", "--dtype")] = None,
    seed: Annotated[int | None, _opt("Random seed; same seed, same run [default: 0].", "--seed")] = None,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a policy with curriculum DPO on a staged dataset.

    Examples:

      sc-data train staged/ -o runs/sc --model smollm2-135m-instruct --schedule staged_competence

      sc-data train staged/ -o runs/base --schedule shuffled --max-steps-per-stage 20

      sc-data train staged/ -o runs/sc --config train.yaml --resume
    """
    from sc_data.train.config import TrainConfig, merge_overrides
    from sc_data.train.trainer import train

    overrides = {
        "seed": seed, "model.name": model, "model.device": device, "model.dtype": dtype,
        "curriculum.schedule": schedule.value if schedule else None, "curriculum.max_steps_per_stage": max_steps_per_stage,
        "curriculum.epochs_per_stage": epochs_per_stage, "curriculum.competence": competence, "curriculum.horizon": horizon,
        "curriculum.ref_update": ref_update, "loss.type": loss.value if loss else None, "loss.beta": beta,
        "loss.label_smoothing": label_smoothing, "loss.sft_weight": sft_weight, "lora.enabled": lora, "lora.r": lora_r,
        "lora.alpha": lora_alpha, "lora.dropout": lora_dropout, "optim.lr": lr, "optim.lr_schedule": lr_schedule,
        "optim.warmup_ratio": warmup_ratio, "optim.effective_batch": effective_batch, "optim.micro_batch": micro_batch,
        "data.max_length": max_length, "data.max_prompt_length": max_prompt_length, "cat_dpo.enabled": cat_dpo,
        "checkpoint.every": checkpoint_every,
    }
    cfg = TrainConfig.from_yaml(config, overrides) if config else TrainConfig.from_dict(merge_overrides({}, overrides))
    logging.basicConfig(level=logging.INFO, handlers=[RichHandler(console=stderr, show_path=False)], format="%(message)s", force=True)
    with Progress(
        TextColumn("stage {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=stderr, transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, stage=0, loss=float("nan"))

        def progress(record: dict[str, Any], total: int) -> None:
            bar.update(task, total=total, completed=record["step"], stage=record["stage"], loss=record["loss"])

        result = train(data, output, cfg, resume=resume, progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"Trained {result.global_step} steps over {result.stages} stage(s) -> {result.final_dir}")
    for key in ("loss", "margin", "accuracy", "chosen_reward", "rejected_reward"):
        table.add_column(key, justify="right")
    m = result.last_metrics
    if m:
        table.add_row(*(f"{m[k]:.4f}" for k in ("loss", "margin", "accuracy", "chosen_reward", "rejected_reward")))
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add `sc-data train` to ``app``."""
    app.command("train")(train_command)

