"""`sc-data train`: curriculum DPO training on a staged dataset (Staged-Competence, Cat-DPO)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sc_data.cli._common import (
    ConfigFile,
    ConfigFlags,
    JsonFlag,
    OutputDir,
    handle_errors,
    needs_extra,
    print_json,
    show_progress,
    stderr,
    stdout,
)
from sc_data.config import load_config
from sc_data.train.config import TrainConfig

FLAGS = ConfigFlags(
    TrainConfig,
    preset="preset", engine="engine", model="model.name", device="model.device", dtype="model.dtype", seed="seed",
    gradient_checkpointing="model.gradient_checkpointing", attn_implementation="model.attn_implementation",
    schedule="curriculum.schedule", max_steps_per_stage="curriculum.max_steps_per_stage",
    epochs_per_stage="curriculum.epochs_per_stage", competence="curriculum.competence",
    horizon="curriculum.horizon", ref_update="curriculum.ref_update",
    loss="loss.type", beta="loss.beta", label_smoothing="loss.label_smoothing", sft_weight="loss.sft_weight",
    lora="lora.enabled", lora_r="lora.r", lora_alpha="lora.alpha", lora_dropout="lora.dropout",
    lr="optim.lr", lr_schedule="optim.lr_schedule", warmup_ratio="optim.warmup_ratio",
    effective_batch="optim.effective_batch", micro_batch="optim.micro_batch", grad_accum="optim.grad_accum",
    max_length="data.max_length", max_prompt_length="data.max_prompt_length", template="data.template",
    cat_dpo="cat_dpo.enabled", checkpoint_every="checkpoint.every",
    report_to="output.report_to", merge="output.merge", push_to_hub="output.push_to_hub", private="output.private",
)
Schedule = FLAGS.choices("schedule")
Competence = FLAGS.choices("competence")
RefUpdate = FLAGS.choices("ref_update")
Loss = FLAGS.choices("loss")
LrSchedule = FLAGS.choices("lr_schedule")
DType = FLAGS.choices("dtype")
Preset = FLAGS.choices("preset")
Engine = FLAGS.choices("engine")
Attention = FLAGS.choices("attn_implementation")
Template = FLAGS.choices("template")
ReportTo = FLAGS.choices("report_to")


@handle_errors
def train_command(
    data: Annotated[str, typer.Argument(help="Staged dataset folder (from `sc-data stage`) or Hub dataset ORG/NAME[@REV].")],
    output: OutputDir,
    model: Annotated[str | None, FLAGS.option("model", "--model", "-m")] = None,
    preset: Annotated[Preset | None, FLAGS.option("preset")] = None,
    engine: Annotated[Engine | None, FLAGS.option("engine")] = None,
    schedule: Annotated[Schedule | None, FLAGS.option("schedule")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in the output folder.")] = False,
    max_steps_per_stage: Annotated[int | None, FLAGS.option("max_steps_per_stage")] = None,
    epochs_per_stage: Annotated[float | None, FLAGS.option("epochs_per_stage")] = None,
    competence: Annotated[Competence | None, FLAGS.option("competence")] = None,
    horizon: Annotated[float | None, FLAGS.option("horizon")] = None,
    ref_update: Annotated[RefUpdate | None, FLAGS.option("ref_update")] = None,
    loss: Annotated[Loss | None, FLAGS.option("loss")] = None,
    beta: Annotated[float | None, FLAGS.option("beta")] = None,
    label_smoothing: Annotated[float | None, FLAGS.option("label_smoothing")] = None,
    sft_weight: Annotated[float | None, FLAGS.option("sft_weight")] = None,
    lora: Annotated[bool | None, FLAGS.option("lora", "--lora/--full")] = None,
    lora_r: Annotated[int | None, FLAGS.option("lora_r")] = None,
    lora_alpha: Annotated[float | None, FLAGS.option("lora_alpha")] = None,
    lora_dropout: Annotated[float | None, FLAGS.option("lora_dropout")] = None,
    lr: Annotated[float | None, FLAGS.option("lr")] = None,
    lr_schedule: Annotated[LrSchedule | None, FLAGS.option("lr_schedule")] = None,
    warmup_ratio: Annotated[float | None, FLAGS.option("warmup_ratio")] = None,
    effective_batch: Annotated[int | None, FLAGS.option("effective_batch")] = None,
    micro_batch: Annotated[int | None, FLAGS.option("micro_batch")] = None,
    grad_accum: Annotated[int | None, FLAGS.option("grad_accum")] = None,
    max_length: Annotated[int | None, FLAGS.option("max_length")] = None,
    max_prompt_length: Annotated[int | None, FLAGS.option("max_prompt_length")] = None,
    template: Annotated[Template | None, FLAGS.option("template")] = None,
    cat_dpo: Annotated[bool | None, FLAGS.option("cat_dpo", "--cat-dpo/--no-cat-dpo")] = None,
    checkpoint_every: Annotated[int | None, FLAGS.option("checkpoint_every")] = None,
    device: Annotated[str | None, FLAGS.option("device")] = None,
    dtype: Annotated[DType | None, FLAGS.option("dtype")] = None,
    gradient_checkpointing: Annotated[
        bool | None, FLAGS.option("gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    attn_implementation: Annotated[Attention | None, FLAGS.option("attn_implementation", "--attn")] = None,
    seed: Annotated[int | None, FLAGS.option("seed")] = None,
    report_to: Annotated[ReportTo | None, FLAGS.option("report_to")] = None,
    merge: Annotated[bool | None, FLAGS.option("merge", "--merge/--no-merge")] = None,
    push_to_hub: Annotated[str | None, FLAGS.option("push_to_hub", metavar="ORG/NAME")] = None,
    private: Annotated[bool | None, FLAGS.option("private", "--private/--public")] = None,
    config: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a policy with curriculum DPO on a staged dataset.

    Examples:

      sc-data train staged/ -o runs/sc --model smollm2-135m-instruct --schedule staged_competence

      sc-data train staged/ -o runs/base --schedule shuffled --max-steps-per-stage 20

      sc-data train staged/ -o runs/sc --config train.yaml --resume

      sc-data train staged/ -o runs/paper --preset paper

      sc-data train staged/ -o runs/trl --engine trl --lora

      sc-data train staged/ -o runs/sc --report-to tensorboard --merge --push-to-hub my-org/sc-smollm2

      accelerate launch --num_processes 8 $(which sc-data) train staged/ -o runs/sc
    """
    cfg = TrainConfig.from_dict(load_config(config, FLAGS.overrides(locals())))
    extra = "trl" if cfg.engine == "trl" else "train"  # a missing torch or peft names the engine's extra
    with needs_extra(extra):
        from sc_data.train.trainer import train
    logging.basicConfig(level=logging.INFO if not stdout.quiet else logging.WARNING, handlers=[RichHandler(console=stderr, show_path=False)], format="%(message)s", force=True)
    with Progress(
        TextColumn("stage {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=stderr, transient=False, disable=not show_progress(),
    ) as bar:
        task = bar.add_task("train", total=None, stage=0, loss=float("nan"))

        def progress(record: dict[str, Any], total: int) -> None:
            bar.update(task, total=total, completed=record["step"], stage=record["stage"], loss=record["loss"])

        with needs_extra(extra):
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
    if result.hub_commit:
        stdout.print(f"Pushed final/ to {result.hub_commit}")


def register(app: typer.Typer) -> None:
    """Add `sc-data train` to ``app``."""
    app.command("train")(train_command)

