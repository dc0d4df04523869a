"""Curriculum DPO on TRL's ``DPOTrainer``: the native recipe's stages, sampler, reference updates and Cat-DPO.

A TRL user keeps TRL: their model, tokenizer and ``DPOConfig`` (precision, gradient checkpointing,
``report_to``, logging, checkpointing) and the ``accelerate launch`` configuration apply unchanged.
What the curriculum adds is decided by the same code as the native engine
(:mod:`sc_data.train.curriculum`, :mod:`sc_data.train.cat_dpo`, :class:`~sc_data.train.policy.Policy`):

* one ``DPOTrainer`` per stage, so the optimizer and learning-rate schedule restart at each stage;
  its training set is the stage's global batches in the order :class:`StageSampler` draws them,
  read sequentially, so accelerate hands each rank its share of every global batch;
* the pairs are tokenised by the shared log-prob core and given to TRL as ``prompt_ids`` /
  ``chosen_ids`` / ``rejected_ids``: both engines and the ``ref_margin`` scorer see the same
  tokens (TRL's own tokenisation keeps the newline after the end-of-turn token, the core does not);
* reference log-probs are TRL's precomputed ones, computed by TRL's ``compute_ref_log_probs`` at
  each stage start for the rows the stage draws: after a hard update the stage-start policy *is*
  the reference (LoRA: merged in fp32, fresh adapter). Stage 0 takes the scorer's stored log-probs
  when they fit, as the native engine does. TR-DPO goes through TRL's ``sync_ref_model``;
* Cat-DPO's margin γ_c enters as ``ref_chosen_logps + γ_c/β``, so TRL's loss is −log σ(β·h − γ_c);
  the dual ascent on the dev split runs after each due step.

docs/ARCHITECTURE.md, "Two engines", lists what differs between the engines.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader, SequentialSampler
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from sc_data.errors import ConfigError
from sc_data.io import write_json
from sc_data.train.cat_dpo import controller_for, unsafe_rates
from sc_data.train.checkpoint import (
    check_run_folder,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_reference,
    truncate_metrics,
)
from sc_data.train.config import TrainConfig
from sc_data.train.curriculum import Stage, StageSampler, build_stages
from sc_data.train.data import (
    categories_of,
    compute_logprobs,
    curriculum_columns,
    load_staged,
    pair_length,
    stored_ref_logprobs,
    tokenize_table,
)
from sc_data.train.outputs import dataset_identity, save_outputs
from sc_data.train.tracking import PROJECT, logging_dir
from sc_data.train.trainer import (
    Counters,
    ProgressFn,
    RefCache,
    TrainResult,
    progress_state,
    restore_progress,
)

logger = logging.getLogger("sc_data.train")

ROW = "sc_row"
STATE_FILE = "sc_state.pt"
_SCHEDULER = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class RowCollator:
    """TRL's preference collator, keeping each example's training-row index for the reference look-up."""

    def __init__(self, base: DataCollatorForPreference) -> None:
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        if ROW in examples[0]:
            batch[ROW] = torch.tensor([e[ROW] for e in examples], dtype=torch.long)
        return batch


class StageTrainer(DPOTrainer):
    """``DPOTrainer`` for one stage: pre-tokenised rows in sampler order, reference log-probs from the run."""

    def __init__(self, *args: Any, run: TRLCurriculum, **kwargs: Any) -> None:
        self.run = run  # read by _precompute_ref_logps, which DPOTrainer.__init__ calls
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset: Dataset, *args: Any, **kwargs: Any) -> Dataset:
        return dataset  # tokenised by the shared core

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if ROW not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, ROW]

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SequentialSampler:
        return SequentialSampler(self.train_dataset)  # the stage's batches are already in order

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        self.run.fill_reference(self, np.unique(np.asarray(dataset[ROW])), batch_size)
        return dataset

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        rows = inputs.pop(ROW)
        if self.precompute_ref_logps:
            chosen, rejected = self.run.reference_of(rows.cpu().numpy())
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = chosen.to(rows.device), rejected.to(rows.device)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class _StageCallback(TrainerCallback):
    """Forwards the trainer's step, log and save events of one stage to the run."""

    def __init__(self, run: TRLCurriculum, stage: Stage, sampler: StageSampler) -> None:
        self.run, self.stage, self.sampler = run, stage, sampler

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.run.after_step(self.stage, self.sampler, state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.run.log(self.stage, self.sampler, state.global_step, logs)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            torch.save(self.run.step_state(), Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE)


class _RunSteps(TrainerCallback):
    """The trackers' callbacks (tensorboard, wandb, trackio) kept for the whole run and shown the run's step.

    WHY: each stage is its own ``DPOTrainer``, whose ``global_step`` restarts at 0 and whose
    tensorboard folder is under the stage's; trackers left to the stage trainers showed one curve
    per stage, each from step 0, in a folder per stage. This one callback relays every event to
    them; what they record (:data:`RECORDED`) with the step moved on by ``offset`` (the steps of
    the stages before), so each tracker holds one run. Other events keep the stage's step, which
    names the stage's checkpoint folders (wandb's ``on_save`` uploads ``checkpoint-<step>``).
    """

    RECORDED = frozenset({"on_log", "on_evaluate", "on_predict"})

    def __init__(self, trackers: list[TrainerCallback]) -> None:
        self.trackers, self.offset = trackers, 0

    @staticmethod
    def _relay(event: str) -> Any:
        def relay(self: _RunSteps, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if event in _RunSteps.RECORDED:
                state = copy.copy(state)
                state.global_step += self.offset
            for tracker in self.trackers:  # as transformers' CallbackHandler does: a control returned replaces the one passed on
                control = getattr(tracker, event)(args, state, control, **kwargs) or control
            return control
        return relay


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    setattr(_RunSteps, _event, _RunSteps._relay(_event))


class TRLCurriculum:
    """A curriculum run on TRL: build it, call :meth:`train`.

    Args:
        model: the policy (a peft model for LoRA; its adapter is merged at each reference update).
        tokenizer: its tokenizer.
        data: staged dataset folder, or Hub dataset ``ORG/NAME[@REV]``.
        args: the ``DPOConfig``; ``output_dir`` is the run folder. ``max_steps`` and the
            training order come from the curriculum; evaluation is ``sc-data eval``'s.
        config: the curriculum, data, Cat-DPO and checkpoint sections (and the record of the run).
        model_sha256: the weights' content hash, needed to reuse the scorer's stored log-probs.
        resume: continue from the latest stage-end checkpoint and the stage's latest TRL checkpoint.
        progress: called after each logged step; when given, it replaces TRL's console output.
    """

    def __init__(self, model: Any, tokenizer: Any, data: str | Path, args: DPOConfig, config: TrainConfig, *,
                 model_sha256: str | None = None, resume: bool = False, progress: ProgressFn | None = None) -> None:
        self.model, self.tokenizer, self.data, self.args, self.config = model, tokenizer, data, args, config
        self.model_sha256, self.resume, self.progress = model_sha256, resume, progress
        self.output = Path(args.output_dir)
        self.metrics_path = self.output / "metrics.jsonl"
        self.trackers: _RunSteps | None = None

    # ------------------------------------------------------------------------------------ setup
    def _setup(self) -> None:
        from peft import PeftModel

        from sc_data.models.logprob import HH_TEMPLATE, PairTokenizer, TruncationConfig
        from sc_data.train.policy import Policy

        cfg, args = self.config, self.args
        check_run_folder(self.output, resume=self.resume)
        self.is_main = args.process_index == 0
        self.effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.staged = load_staged(self.data)
        ids, difficulty, tiers = curriculum_columns(self.staged.train)
        truncation = TruncationConfig(max_length=args.max_length or cfg.data.max_length, max_prompt_length=cfg.data.max_prompt_length)
        self.pair_tokenizer = PairTokenizer(self.tokenizer, truncation=truncation, chat_template=HH_TEMPLATE if cfg.data.template == "hh" else None)
        self.pairs = tokenize_table(self.pair_tokenizer, self.staged.train)
        self.train_cats = categories_of(self.staged.train)
        cur = cfg.curriculum
        self.stages = build_stages(cur.schedule, tiers=tiers, difficulty=difficulty, ids=ids, effective_batch=self.effective,
                                   epochs_per_stage=cur.epochs_per_stage, horizon=cur.horizon, max_steps_per_stage=cur.max_steps_per_stage)
        self.policy = Policy(self.model, reference=None, adapter_seed=cfg.seed) if isinstance(self.model, PeftModel) else None
        tr_dpo = cur.ref_update == "tr_dpo"
        self.ref_model = copy.deepcopy(self.model).float().requires_grad_(False) if tr_dpo else None
        self.cache = None if tr_dpo else RefCache(len(self.pairs), torch.device("cpu"))
        self.controller, self.dev_pairs, self.dev_cats = None, [], []
        if cfg.cat_dpo.enabled:
            self.controller = controller_for(cfg.cat_dpo, self.staged.dev)
            self.dev_pairs, self.dev_cats = tokenize_table(self.pair_tokenizer, self.staged.dev), categories_of(self.staged.dev)
        self.counters, self.seen = Counters(), np.zeros(len(self.pairs), dtype=bool)
        self.dev_pi0: dict[str, torch.Tensor] | None = None
        self.run_info: dict[str, Any] = {"engine": "trl", "trl": importlib.metadata.version("trl"), "dpo_config": args.to_dict(),
                                         "dataset": dataset_identity(self.data, self.staged.root)}
        self.step_resume: Path | None = None
        if self.resume:
            self._restore()
        self.started = time.time()
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            write_json(cfg.model_dump(mode="json"), self.output / "train_config.json")
            truncate_metrics(self.metrics_path, self.counters.global_step)
            write_json(self.run_info, self.output / "run_info.json")

    def _restore(self) -> None:
        """The latest stage end (weights, counters, reference cache, Cat-DPO), then the stage's latest TRL checkpoint."""
        checkpoint = latest_checkpoint(self.output)
        if checkpoint is not None:
            state = load_checkpoint(checkpoint)
            if self.policy is not None:
                self.policy.load_states(state["trainable"], state["reference"])
            else:
                self.model.load_state_dict(state["trainable"])
                if self.ref_model is not None and state["reference"] is not None:
                    self.ref_model.load_state_dict(state["reference"])
            self.counters, self.seen, self.dev_pi0 = restore_progress(state["trainer_state"], self.cache, self.controller)
        run_info = self.output / "run_info.json"
        if run_info.is_file():
            self.run_info = {**json.loads(run_info.read_text("utf-8")), **self.run_info}
        if self.counters.stage < len(self.stages):
            found = sorted((p for p in self._stage_dir(self.counters.stage).glob("checkpoint-*") if (p / STATE_FILE).is_file()),
                           key=lambda p: int(p.name.removeprefix("checkpoint-")))
            if found:
                self.step_resume = found[-1]
                state = torch.load(found[-1] / STATE_FILE, map_location="cpu", weights_only=True)
                self.seen = state["seen"].numpy().copy()
                if self.controller is not None:
                    self.controller.load_state_dict(state["cat_dpo"])
                self.counters.stage_step = int(found[-1].name.removeprefix("checkpoint-"))
                self.counters.global_step = self._offset(self.stages[self.counters.stage]) + self.counters.stage_step
        logger.info("resuming at stage %d, step %d", self.counters.stage, self.counters.global_step)

    # ------------------------------------------------------------------------------ reference
    def fill_reference(self, trainer: StageTrainer, rows: np.ndarray, batch_size: int) -> None:
        """Reference log-probs of ``rows`` into the cache: stored ones at stage 0 when they fit, else TRL's pass."""
        if self.cache is None:
            return
        if self.config.curriculum.ref_update == "none":
            rows = np.arange(len(self.pairs))  # the reference never moves: every row once
        if self.counters.stage == 0 and not self.cache.known.any():
            self._stage0_reference(trainer, rows, batch_size)
        missing = rows[~self.cache.known[rows]]
        if len(missing):
            chosen, rejected = self._trl_reference(trainer, missing, batch_size)
            self.cache.fill(missing, chosen, rejected)

    def _trl_reference(self, trainer: StageTrainer, rows: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """TRL's own reference forward (``compute_ref_log_probs``) over ``rows``, shared out to the ranks and gathered."""
        from trl.models import prepare_deepspeed

        loader = trainer.accelerator.prepare(DataLoader(self._dataset(rows), batch_size=batch_size, collate_fn=trainer.data_collator))
        model = trainer.model
        if trainer.is_deepspeed_enabled:  # the model is not wrapped yet: place (ZeRO-1/2) or gather (ZeRO-3) it, as TRL does
            trainer._precompute_engine = trainer._precompute_engine or prepare_deepspeed(trainer.model, trainer.accelerator)
            model = trainer._precompute_engine
        where = {int(r): k for k, r in enumerate(rows)}
        chosen, rejected = torch.zeros(len(rows)), torch.zeros(len(rows))
        for batch in loader:
            index = batch.pop(ROW)
            c, r = trainer.compute_ref_log_probs(model, batch)
            c, r, index = trainer.accelerator.gather_for_metrics((c, r, index))
            k = torch.tensor([where[int(i)] for i in index.tolist()])
            chosen[k], rejected[k] = c.float().cpu(), r.float().cpu()
        return chosen, rejected

    def _stage0_reference(self, trainer: StageTrainer, rows: np.ndarray, batch_size: int) -> None:
        """Stage 0 takes the scorer's stored log-probs when they fit this run and TRL's pass agrees on a probe."""
        from sc_data.models.logprob import forward_dtype

        data = self.config.data
        forward = forward_dtype(self.model.dtype, torch.bfloat16 if self.args.bf16 else None)
        info: dict[str, Any] = {"source": "live", "forward_dtype": forward}
        if not data.reuse_ref_logps:
            return self._record_stage0({**info, "reason": "data.reuse_ref_logps is false"})
        stored = stored_ref_logprobs(self.staged, model_sha256=self.model_sha256, template=self.pair_tokenizer.describe(), forward=forward)
        info["reason"] = stored.reason
        if stored.usable:
            probe = np.sort(rows[: data.reuse_check_rows])
            chosen, rejected = self._trl_reference(trainer, probe, batch_size)
            gap = float(max(np.abs(stored.chosen[probe] - chosen.double().numpy()).max(),
                            np.abs(stored.rejected[probe] - rejected.double().numpy()).max()))
            info.update(checked_rows=len(probe), max_gap_nats=gap, tolerance_nats=data.reuse_tolerance)
            if gap <= data.reuse_tolerance:
                everything = np.arange(len(self.pairs))
                self.cache.fill(everything, torch.as_tensor(stored.chosen), torch.as_tensor(stored.rejected))
                return self._record_stage0({**info, "source": "stored"})
            info["reason"] = (f"stored log-probs differ from TRL's reference pass by up to {gap:.4g} nats summed on {len(probe)} rows "
                              f"(tolerance {data.reuse_tolerance} nats)")
        logger.info("stage 0 computes its reference log-probs with TRL: %s", info["reason"])
        return self._record_stage0(info)

    def _record_stage0(self, info: dict[str, Any]) -> None:
        self.run_info["stage0_reference"] = info
        if self.is_main:
            write_json(self.run_info, self.output / "run_info.json")

    def reference_of(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's reference log-probs, the chosen side raised by Cat-DPO's γ_c/β."""
        index = torch.as_tensor(rows)
        chosen, rejected = self.cache.chosen[index], self.cache.rejected[index]
        if self.controller is not None:
            chosen = chosen + self.controller.margins([self.train_cats[int(i)] for i in rows]) / self.args.beta
        return chosen, rejected

    # --------------------------------------------------------------------------------- stages
    def _stage_dir(self, index: int) -> Path:
        return self.output / "stages" / f"stage-{index}"

    def _offset(self, stage: Stage) -> int:
        return sum(s.steps for s in self.stages[: stage.index])

    def _dataset(self, rows: np.ndarray) -> Dataset:
        pairs = [self.pairs[int(i)] for i in rows]
        return Dataset.from_dict({
            "prompt_ids": [p.prompt_ids for p in pairs], "chosen_ids": [p.chosen_ids for p in pairs],
            "rejected_ids": [p.rejected_ids for p in pairs], ROW: [int(i) for i in rows],
        })

    def _stage_args(self, stage: Stage) -> DPOConfig:
        args = copy.deepcopy(self.args)
        args.output_dir = str(self._stage_dir(stage.index))
        args.max_steps = stage.steps
        args.eval_strategy = "no"
        tr_dpo = self.config.curriculum.ref_update == "tr_dpo"
        args.precompute_ref_log_probs, args.sync_ref_model = not tr_dpo, tr_dpo
        return args

    def _run_stage(self, stage: Stage) -> None:
        cur = self.config.curriculum
        sampler = StageSampler(stage, effective_batch=self.effective, seed=self.config.seed, competence_kind=cur.competence,
                               c0=cur.c0, zero_based=cur.competence_step == "zero_based")
        stream = np.concatenate([sampler.rows(t) for t in range(stage.steps)])
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        args = self._stage_args(stage)
        if self.policy is not None and "ref" in self.model.peft_config:
            self.model.delete_adapter("ref")  # TRL adds a frozen copy of the fresh adapter (B = 0) as the reference at each stage
        collator = RowCollator(DataCollatorForPreference(pad_token_id=pad, max_length=args.max_length, pad_to_multiple_of=args.pad_to_multiple_of))
        self.trainer = StageTrainer(model=self.model, ref_model=self.ref_model, args=args, train_dataset=self._dataset(stream),
                                    processing_class=self.tokenizer, data_collator=collator,
                                    callbacks=[_StageCallback(self, stage, sampler)], run=self)
        self._run_trackers(self._offset(stage))
        if self.progress is not None:
            self.trainer.remove_callback(PrinterCallback)
            self.trainer.remove_callback(ProgressCallback)
        if self.controller is not None and self.dev_pi0 is None:
            self.dev_pi0 = self._dev_logprobs()  # π₀: the policy before any update
        resume_from, self.step_resume = self.step_resume, None
        self.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    def _run_trackers(self, offset: int) -> None:
        """Swap the stage trainer's tracker callbacks for the run's (the first stage's), shown the run's step.

        Tensorboard writes where the native engine's does, ``run/logs/sc-data``.
        """
        from transformers.integrations import (
            TensorBoardCallback,
            get_reporting_integration_callbacks,
        )

        kinds = get_reporting_integration_callbacks(self.args.report_to)
        if self.trackers is None:
            self.trackers = _RunSteps([tracker for kind in kinds if (tracker := self.trainer.pop_callback(kind)) is not None])
            for tracker in self.trackers.trackers:
                if isinstance(tracker, TensorBoardCallback) and tracker.logging_dir is None:
                    tracker.logging_dir = str(logging_dir(self.output) / PROJECT)
        for kind in kinds:
            self.trainer.remove_callback(kind)
        self.trackers.offset = offset
        self.trainer.add_callback(self.trackers)

    def _dev_logprobs(self) -> dict[str, torch.Tensor]:
        """The policy's summed log-probs on the dev split (the shared core, no grad)."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        was_training = model.training
        model.eval()
        with self.trainer.accelerator.autocast():
            table = compute_logprobs(model, self.dev_pairs, np.arange(len(self.dev_pairs)), micro_batch=self.args.per_device_train_batch_size,
                                     pad_token_id=self.tokenizer.pad_token_id)
        model.train(was_training)
        return {"chosen": table.chosen.double(), "rejected": table.rejected.double()}

    def after_step(self, stage: Stage, sampler: StageSampler, stage_step: int) -> None:
        """Rows seen, counters and the Cat-DPO dual step due after optimizer step ``stage_step`` (1-based)."""
        self.seen[sampler.rows(stage_step - 1)] = True
        self.counters.stage_step, self.counters.global_step = stage_step, self._offset(stage) + stage_step
        if self.controller is not None and self.counters.global_step % self.config.cat_dpo.every == 0:
            now = self._dev_logprobs()
            h = (now["chosen"] - self.dev_pi0["chosen"]) - (now["rejected"] - self.dev_pi0["rejected"])
            self.controller.update(unsafe_rates(h, self.dev_cats))

    def log(self, stage: Stage, sampler: StageSampler, stage_step: int, logs: dict[str, float]) -> None:
        """One ``metrics.jsonl`` record, with the native engine's keys, from TRL's log of step ``stage_step``."""
        step = stage_step - 1
        record = {
            "step": self._offset(stage) + stage_step, "stage": stage.index, "stage_step": stage_step, "loss": logs["loss"],
            "chosen_reward": logs.get("rewards/chosen"), "rejected_reward": logs.get("rewards/rejected"),
            "margin": logs.get("rewards/margins"), "accuracy": logs.get("rewards/accuracies"),
            "competence": sampler.competence(step), "pool_size": sampler.pool_size(step), "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"), "tokens": sum(pair_length(self.pairs[int(i)]) for i in sampler.rows(step)),
            "pairs_seen": int(self.seen.sum()), "time": round(time.time() - self.started, 3),
        }
        if self.controller is not None:
            record["gamma"] = dict(sorted(self.controller.gamma.items()))
            record["unsafe"] = dict(sorted(self.controller.unsafe.items()))
        if self.is_main:
            with self.metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self.progress is not None:
            self.progress(record, sum(s.steps for s in self.stages))

    def step_state(self) -> dict[str, Any]:
        """What a TRL checkpoint inside a stage lacks for an exact resume."""
        return {"seen": torch.from_numpy(self.seen.copy()), "cat_dpo": self.controller.state_dict() if self.controller else None}

    def _end_stage(self, stage: Stage) -> None:
        if stage.ref_update and self.config.curriculum.ref_update == "hard":
            if self.policy is not None:
                self.policy.hard_update(generation=stage.index + 1)
            self.counters.reference_generation += 1
            self.cache.known[:] = False  # the stage-end policy is the next stage's reference
            logger.info("stage %d done: reference updated to the policy", stage.index)
        self.counters.stage, self.counters.stage_step = stage.index + 1, 0
        if self.config.checkpoint.stage_ends:
            self._save_stage_end()
        self.trainer.accelerator.wait_for_everyone()
        if self.is_main:
            for done in self._stage_dir(stage.index).glob("checkpoint-*"):
                shutil.rmtree(done)

    def _save_stage_end(self) -> None:
        """The native engine's stage-end checkpoint: weights (LoRA: adapter + merged base once), counters, cache, Cat-DPO."""
        if not self.is_main:
            return
        generation, reference = 0, None
        if self.policy is not None and self.counters.reference_generation > 0:
            generation, reference = self.counters.reference_generation, self.policy.reference_state()
        elif self.ref_model is not None:
            generation, reference = self.counters.stage, {k: v.detach().cpu().clone() for k, v in self.ref_model.state_dict().items()}
        if reference is not None:
            save_reference(self.output, generation, reference)
        trainable = self.policy.trainable_state() if self.policy is not None else {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        state = progress_state(self.counters, generation, self.cache, self.seen, self.dev_pi0, self.controller)
        save_checkpoint(self.output, self.counters.global_step, trainable=trainable, optimizer={}, trainer_state=state,
                        config=self.config.model_dump(mode="json"), keep=self.config.checkpoint.keep, stage_end=True)

    # -------------------------------------------------------------------------------- the run
    def train(self) -> TrainResult:
        """Setup, every stage on its own DPOTrainer with the reference update at its end, then ``final/``."""
        self._setup()
        for stage in self.stages[self.counters.stage :]:
            self._run_stage(stage)
            self._end_stage(stage)
        if self.is_main:
            save_outputs(self.output, policy=self.policy, model=self.model, tokenizer=self.tokenizer, config=self.config)
        last = {}
        if self.metrics_path.is_file() and (lines := self.metrics_path.read_text("utf-8").splitlines()):
            last = json.loads(lines[-1])
        return TrainResult(output=self.output, final_dir=self.output / "final", global_step=self.counters.global_step,
                           stages=len(self.stages), last_metrics=last)


def _model_sha256(model: Any) -> str | None:
    """The content hash of the folder a model was loaded from (None when it was not a local folder)."""
    from sc_data.models.loading import resolve_model_path

    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    return resolve_model_path(str(folder)).sha256 if folder.is_dir() else None


def check_trl_options(config: TrainConfig) -> None:
    """Refuse, naming the option, what the TRL engine cannot do the way the native engine does."""
    if config.loss.type == "cdpo":
        raise ConfigError("loss.type='cdpo': TRL's DPOTrainer has no conservative (label-smoothed) sigmoid loss; "
                          "use loss.type='robust' or engine='native'")
    if config.loss.sft_weight > 0:
        raise ConfigError("loss.sft_weight: the TRL engine takes TRL's own SFT term (DPOConfig loss_type=['sigmoid', 'sft']) "
                          "in a Python script; on the command line use engine='native'")
    if config.cat_dpo.enabled and config.curriculum.ref_update == "tr_dpo":
        raise ConfigError("cat_dpo with curriculum.ref_update='tr_dpo': on the TRL engine the margins ride on precomputed "
                          "reference log-probs, which TR-DPO's moving reference rules out; use engine='native'")
    if config.model.device.startswith("cuda:"):
        raise ConfigError(f"model.device={config.model.device!r}: the TRL engine uses the device accelerate assigns; "
                          "choose the GPU with CUDA_VISIBLE_DEVICES")


def dpo_config(config: TrainConfig, output: Path, *, bf16: bool, cpu: bool) -> DPOConfig:
    """The ``DPOConfig`` equivalent to ``config`` (the command line's TRL engine)."""
    from accelerate import PartialState

    o, cur = config.optim, config.curriculum
    every = config.checkpoint.every
    return DPOConfig(
        output_dir=str(output), seed=config.seed, learning_rate=o.lr, weight_decay=o.weight_decay,
        lr_scheduler_type=_SCHEDULER[o.lr_schedule], warmup_steps=o.warmup_ratio, per_device_train_batch_size=o.micro_batch,
        gradient_accumulation_steps=config.grad_accum_for(PartialState().num_processes), max_grad_norm=o.max_grad_norm,
        beta=config.loss.beta, loss_type=[config.loss.type], label_smoothing=config.loss.label_smoothing,
        max_length=config.data.max_length, gradient_checkpointing=config.model.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=bf16, use_cpu=cpu, logging_steps=1,
        report_to=[] if config.output.report_to == "none" else [config.output.report_to], run_name=output.name,
        save_strategy="steps" if every else "no", save_steps=every or 500, save_total_limit=config.checkpoint.keep,
        ref_model_mixup_alpha=cur.tr_dpo_alpha, ref_model_sync_steps=cur.tr_dpo_tau, disable_dropout=True,
        dataloader_drop_last=False, disable_tqdm=True,
    )


def train_trl(data: str | Path, output: str | Path, config: TrainConfig, *, resume: bool = False,
              progress: ProgressFn | None = None) -> TrainResult:
    """``sc-data train --engine trl``: load the model as the native engine does, then :class:`TRLCurriculum`."""
    from sc_data.models.loading import (
        load_causal_lm,
        resolve_attention,
        resolve_device,
        resolve_dtype,
    )
    from sc_data.train.policy import with_adapter

    check_trl_options(config)
    device = resolve_device(config.model.device)
    compute = resolve_dtype(config.model.dtype, device)
    lora = config.lora.enabled
    model, tokenizer, ref = load_causal_lm(
        config.model.name, device="cpu", dtype=str(compute).removeprefix("torch.") if lora else "float32",
        trust_remote_code=config.model.trust_remote_code, attn_implementation=resolve_attention(config.model.attn_implementation, device),
    )
    if lora:
        model = with_adapter(model, config.lora, seed=config.seed * 1009)
    args = dpo_config(config, Path(output), bf16=compute == torch.bfloat16, cpu=device.type == "cpu")
    return TRLCurriculum(model, tokenizer, data, args, config, model_sha256=ref.sha256, resume=resume, progress=progress).train()


def curriculum_dpo(model: Any, tokenizer: Any, data: str | Path, args: DPOConfig, *, schedule: str = "staged_competence",
                   peft_config: Any = None, resume: bool = False, **sections: Any) -> TrainResult:
    """Run a curriculum on TRL's ``DPOTrainer`` from a TRL script.

    Args:
        model: a ``transformers`` causal LM (or a peft model).
        tokenizer: its tokenizer.
        data: staged dataset folder (``sc-data stage``) or Hub dataset ``ORG/NAME[@REV]``.
        args: your ``DPOConfig``; precision, gradient checkpointing, ``report_to``, logging and
            ``save_steps`` apply as you set them. Batch size × accumulation × processes is the
            curriculum's effective batch; the curriculum sets ``max_steps`` per stage.
        schedule: ``shuffled``, ``sqrt_pacing``, ``sequential``, ``curri_dpo`` or ``staged_competence``.
        peft_config: wrap ``model`` in a fresh adapter (seeded by ``args.seed``), merged at each reference update.
        resume: continue the run in ``args.output_dir``.
        **sections: ``curriculum``, ``data``, ``cat_dpo``, ``checkpoint`` dicts, as in ``sc-data train --config``.

    Example:
        >>> curriculum_dpo(model, tokenizer, "staged/", DPOConfig(output_dir="runs/trl"))  # doctest: +SKIP
    """
    from sc_data.train.policy import with_peft_adapter

    sha256 = _model_sha256(model)
    if peft_config is not None:
        model = with_peft_adapter(model, peft_config, seed=args.seed * 1009)
    curriculum = {"schedule": schedule, **sections.pop("curriculum", {})}
    config = TrainConfig.from_dict({
        "engine": "trl", "seed": args.seed, "model": {"name": str(model.name_or_path)}, "lora": {"enabled": peft_config is not None},
        "loss": {"beta": args.beta}, "curriculum": curriculum,
        "data": {"max_length": args.max_length or 1024, **sections.pop("data", {})}, **sections,
    })
    check_trl_options(config)
    return TRLCurriculum(model, tokenizer, data, args, config, model_sha256=sha256, resume=resume).train()
