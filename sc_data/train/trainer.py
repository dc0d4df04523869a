"""Curriculum DPO training (Staged-Competence, arXiv 2605.26315; Cat-DPO, arXiv 2604.17299) on accelerate.

:class:`CurriculumDPO` is a recipe in torchtune's shape: :meth:`~CurriculumDPO.setup` (accelerator,
data, policy and reference, curriculum, resume), :meth:`~CurriculumDPO.step` (one optimizer step,
returning its statistics), the stage loop with reference updates, checkpoints. docs/ARCHITECTURE.md,
"Training: the method as implemented", is the spec; the loss is the mean of the per-example loss
over the effective batch (micro batch × accumulation × world size).

Distribution is accelerate's: DDP, FSDP and DeepSpeed come from the user's ``accelerate launch``
configuration, mixed precision from ``model.dtype`` through accelerate's autocast. Every rank draws
the same global batch (the samplers are stateless) and takes its own slice; the packed forward
goes through the wrapped :class:`~sc_data.models.logprob.PairLogProbModel`, so the wrapper sees it.
Statistics accumulate on the device and reach the host once per optimizer step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_data.errors import ConfigError
from sc_data.io import write_json
from sc_data.train.cat_dpo import CatDPOController, controller_for, unsafe_rates
from sc_data.train.checkpoint import (
    check_run_folder,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_reference,
    set_rng_states,
    truncate_metrics,
)
from sc_data.train.config import OptimConfig, TrainConfig
from sc_data.train.curriculum import Stage, StageSampler, build_stages, rank_slice
from sc_data.train.data import (
    categories_of,
    curriculum_columns,
    length_grouped,
    load_staged,
    pair_length,
    stored_ref_logprobs,
    tokenize_table,
)
from sc_data.train.losses import build_loss, sft_nll
from sc_data.train.outputs import dataset_identity, save_outputs
from sc_data.train.tracking import PROJECT, flat_config, logging_dir, tracker_metrics

logger = logging.getLogger("sc_data.train")

#: Called after every optimizer step with (metrics record, total optimizer steps of the run).
ProgressFn = Callable[[dict[str, Any], int], None]


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    final_dir: Path
    global_step: int
    stages: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    hub_commit: str | None = None  # the commit URL when ``output.push_to_hub`` pushed final/

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["output"], out["final_dir"] = str(self.output), str(self.final_dir)
        return out


@dataclass
class StepStats:
    """What one optimizer step saw, summed over its effective batch (all ranks)."""

    loss: float
    chosen_reward: float
    rejected_reward: float
    correct: float
    pairs: int
    tokens: int
    grad_norm: float


@dataclass
class Counters:
    stage: int = 0
    stage_step: int = 0
    global_step: int = 0
    reference_generation: int = 0


def lr_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine / linear decay (or constant) over one stage.

    The warm-up's first step already moves the weights (lr · 1/warmup, not 0), so a short stage
    does not spend a whole step at lr 0.
    """
    warmup = math.ceil(optim.warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        if optim.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class RefCache:
    """Reference log-probs of the training rows the current reference has seen, on the device.

    A row's log-probs are computed the first time a stage draws it and kept until the reference
    moves, so a stage shorter than its tier never forwards rows it does not draw. Which rows are
    known is host state, so reading the cache needs no device sync.
    """

    def __init__(self, n: int, device: torch.device) -> None:
        self.chosen = torch.zeros(n, dtype=torch.float32, device=device)
        self.rejected = torch.zeros(n, dtype=torch.float32, device=device)
        self.known = np.zeros(n, dtype=bool)

    def fill(self, rows: np.ndarray, chosen: torch.Tensor, rejected: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Store the log-probs of ``rows`` (``index``: the same rows already on the device)."""
        idx = index if index is not None else torch.as_tensor(rows, device=self.chosen.device)
        self.chosen[idx], self.rejected[idx] = chosen.float(), rejected.float()
        self.known[rows] = True

    def state_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.cpu(), "rejected": self.rejected.cpu(), "known": torch.from_numpy(self.known)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chosen.copy_(state["chosen"])
        self.rejected.copy_(state["rejected"])
        self.known = state["known"].numpy().copy()


def progress_state(counters: Counters, generation: int, cache: RefCache | None, seen: np.ndarray,
                   dev_pi0: dict[str, torch.Tensor] | None, controller: CatDPOController | None) -> dict[str, Any]:
    """The checkpoint's trainer state both engines write: counters, the reference generation it
    builds on, reference cache, rows seen, π₀'s dev log-probs and Cat-DPO's state."""
    return {
        "counters": asdict(counters),
        "reference_generation": generation,
        "ref_cache": cache.state_dict() if cache is not None else None,
        "seen": torch.from_numpy(seen.copy()),
        "dev_pi0": dev_pi0,
        "cat_dpo": controller.state_dict() if controller is not None else None,
    }


def restore_progress(state: dict[str, Any], cache: RefCache | None,
                     controller: CatDPOController | None) -> tuple[Counters, np.ndarray, dict[str, torch.Tensor] | None]:
    """Read :func:`progress_state` back: fills ``cache`` and ``controller``; returns (counters, rows seen, π₀ dev log-probs)."""
    if cache is not None and state["ref_cache"] is not None:
        cache.load_state_dict(state["ref_cache"])
    if controller is not None:
        controller.load_state_dict(state["cat_dpo"])
    return Counters(**state["counters"]), state["seen"].numpy().copy(), state["dev_pi0"]


class CurriculumDPO:
    """The training recipe. Build it, call :meth:`train`.

    Args:
        data: staged dataset folder, or Hub dataset ``ORG/NAME[@REV]``.
        output: run folder.
        config: the resolved :class:`TrainConfig`.
        resume: continue from the latest checkpoint in ``output``.
        progress: called after each optimizer step.
    """

    def __init__(self, data: str | Path, output: str | Path, config: TrainConfig, *, resume: bool = False,
                 progress: ProgressFn | None = None) -> None:
        self.data, self.output, self.config, self.resume, self.progress = data, Path(output), config, resume, progress

    # ------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Accelerator, data, policy and reference, curriculum, then the checkpoint to resume from."""
        check_run_folder(self.output, resume=self.resume)
        self._setup_accelerator()
        self._setup_data()
        self._setup_policy()
        self._setup_curriculum()
        self._setup_state()

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import ProjectConfiguration, parse_flag_from_env

        from sc_data.models.loading import resolve_attention, resolve_device, resolve_dtype

        device = self.config.model.device
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if device.startswith("cuda:"):
            if world > 1:
                raise ConfigError(f"model.device={device!r} names one GPU, but {world} processes run: under accelerate launch each uses its own; use 'auto'")
            resolve_device("cuda")
            torch.cuda.set_device(int(device.split(":")[1]))
            device = "cuda"
        target = resolve_device(device)
        cpu = target.type == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU")
        self.compute_dtype = resolve_dtype(self.config.model.dtype, target)
        bf16 = self.compute_dtype == torch.bfloat16
        # accelerate keeps one state per process; a second run in the same process (a notebook, a
        # sweep) may ask for another precision. Only the precision part is reset, never the process group.
        AcceleratorState._reset_state(reset_partial_state=False)
        report = self.config.output.report_to
        self.accelerator = Accelerator(
            cpu=cpu, mixed_precision="bf16" if bf16 else "no", log_with=None if report == "none" else report,
            project_config=ProjectConfiguration(project_dir=str(self.output), logging_dir=str(logging_dir(self.output))),
        )
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.attn = resolve_attention(self.config.model.attn_implementation, self.device)
        if self.attn == "flex_attention" and self.device.type == "cpu":
            raise ConfigError("model.attn_implementation='flex_attention' cannot train on the CPU (torch has no FlexAttention "
                              "backward there); use 'auto' or 'sdpa'")

    def _setup_data(self) -> None:
        from sc_data.models.logprob import HH_TEMPLATE, PairTokenizer, TruncationConfig

        self.staged = load_staged(self.data)
        self.train_ids, self.difficulty, self.tiers = curriculum_columns(self.staged.train)
        self.train_cats = categories_of(self.staged.train)
        self.template = HH_TEMPLATE if self.config.data.template == "hh" else None
        self.truncation = TruncationConfig(max_length=self.config.data.max_length, max_prompt_length=self.config.data.max_prompt_length)

        def pair_tokenizer(tokenizer: Any) -> PairTokenizer:
            return PairTokenizer(tokenizer, truncation=self.truncation, chat_template=self.template)

        self._pair_tokenizer = pair_tokenizer

    def _setup_policy(self) -> None:
        from sc_data.models.loading import load_causal_lm
        from sc_data.models.logprob import PairLogProbModel, forward_dtype
        from sc_data.train.policy import Policy, with_adapter

        cfg = self.config
        lora = cfg.lora.enabled
        # A LoRA base is held in the compute dtype (the adapter in fp32); a full fine-tune trains fp32 weights.
        load_dtype = str(self.compute_dtype).removeprefix("torch.") if lora else "float32"
        common = {"device": "cpu", "trust_remote_code": cfg.model.trust_remote_code, "attn_implementation": self.attn}
        lm, self.tokenizer, self.model_ref = load_causal_lm(cfg.model.name, dtype=load_dtype, **common)
        lm.config.use_cache = False
        if cfg.model.gradient_checkpointing:
            if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2 renamed it
                lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        reference = None
        if lora:
            lm = with_adapter(lm, cfg.lora, seed=cfg.seed * 1009)
        else:
            reference, _, _ = load_causal_lm(cfg.model.name, dtype="float32", **common)  # read again: no transient copy
        self.policy = Policy(lm, reference=reference, adapter_seed=cfg.seed)
        optimizer = torch.optim.AdamW(self.policy.trainable_parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.module, self.optimizer = self.accelerator.prepare(PairLogProbModel(lm), optimizer)
        self.ref_module = None
        if reference is not None:
            self.ref_module = self.accelerator.prepare_model(PairLogProbModel(reference), evaluation_mode=True)
        self.forward = forward_dtype(self.compute_dtype if lora else torch.float32, self.autocast_dtype)
        self.pad_id = self.tokenizer.pad_token_id
        self.train_pairs = tokenize_table(self._pair_tokenizer(self.tokenizer), self.staged.train)

    def _setup_curriculum(self) -> None:
        cfg, cur = self.config, self.config.curriculum
        self.accum = cfg.grad_accum_for(self.world)
        self.effective = cfg.optim.micro_batch * self.accum * self.world
        self.stages = build_stages(
            cur.schedule, tiers=self.tiers, difficulty=self.difficulty, ids=self.train_ids, effective_batch=self.effective,
            epochs_per_stage=cur.epochs_per_stage, horizon=cur.horizon, max_steps_per_stage=cur.max_steps_per_stage,
        )
        self.loss_fn = build_loss(cfg.loss.type, beta=cfg.loss.beta, label_smoothing=cfg.loss.label_smoothing)
        self.controller: CatDPOController | None = None
        self.dev_pairs: list[Any] = []
        if cfg.cat_dpo.enabled:
            self.controller = controller_for(cfg.cat_dpo, self.staged.dev)
            self.dev_pairs, self.dev_cats = tokenize_table(self._pair_tokenizer(self.tokenizer), self.staged.dev), categories_of(self.staged.dev)
        self.packer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc-train-pack")

    def _setup_state(self) -> None:
        """Counters, reference cache, rows seen, π₀ dev log-probs: fresh, or exactly as checkpointed."""
        self.counters = Counters()
        self.cache: RefCache | None = None if self.config.curriculum.ref_update == "tr_dpo" else RefCache(len(self.train_pairs), self.device)
        self.seen = np.zeros(len(self.train_pairs), dtype=bool)
        self.dev_pi0: dict[str, torch.Tensor] | None = None
        self.resumed: dict[str, Any] | None = None
        self.run_info: dict[str, Any] = {}
        checkpoint = latest_checkpoint(self.output) if self.resume else None
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.controller is not None:
            self.dev_pi0 = self.logprobs(self.dev_pairs, reference=True)  # π₀: the reference before any update
        self.resolved = self.config.model_dump(mode="json")
        self.metrics_path = self.output / "metrics.jsonl"
        self.run_info["dataset"] = dataset_identity(self.data, self.staged.root)
        if self.accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            write_json(self.resolved, self.output / "train_config.json")
            write_json(self.run_info, self.output / "run_info.json")
            truncate_metrics(self.metrics_path, self.counters.global_step)
        if self.config.output.report_to != "none":
            self.accelerator.init_trackers(PROJECT, config=flat_config(self.resolved), init_kwargs={"wandb": {"name": self.output.name}})
        self.accelerator.wait_for_everyone()

    def _restore(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint)
        self.policy.load_states(state["trainable"], state["reference"])
        ts = state["trainer_state"]
        self.counters, self.seen, self.dev_pi0 = restore_progress(ts, self.cache, self.controller)
        set_rng_states(ts["rng"])
        self.resumed = state["optimizer"]
        run_info = self.output / "run_info.json"
        self.run_info = json.loads(run_info.read_text("utf-8")) if run_info.is_file() else {}
        logger.info("resuming from %s (stage %d, step %d)", checkpoint, self.counters.stage, self.counters.stage_step)

    # ------------------------------------------------------------------------------- forwards
    def _device_tensor(self, values: Any) -> torch.Tensor:
        """A small host array on the device without a host sync (pinned, non-blocking on CUDA)."""
        tensor = torch.as_tensor(values)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _pack(self, rows: np.ndarray, pairs: list[Any]) -> Any:
        from sc_data.models.logprob import pack_pairs

        packed = pack_pairs([pairs[int(i)] for i in rows], pad_token_id=self.pad_id)
        return packed.pin_memory() if self.device.type == "cuda" else packed

    def _reference_forward(self, packed: Any) -> Any:
        with torch.no_grad(), self.policy.as_reference(), self.accelerator.autocast():
            return (self.ref_module or self.module)(packed)

    def logprobs(self, pairs: list[Any], *, reference: bool = False, rows: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Summed answer log-probs of ``pairs[rows]`` (all by default) on every rank, no grad, on the CPU."""
        rows = np.arange(len(pairs)) if rows is None else rows
        out = {"chosen": torch.zeros(len(rows), dtype=torch.float64), "rejected": torch.zeros(len(rows), dtype=torch.float64)}
        where = {int(r): k for k, r in enumerate(rows)}
        for group in length_grouped(rows, pairs, self.config.optim.micro_batch):
            packed = self._pack(group, pairs).to(self.device)
            if reference:
                lp = self._reference_forward(packed)
            else:
                with torch.no_grad(), self.accelerator.autocast():
                    lp = self.module(packed)
            idx = torch.tensor([where[int(r)] for r in group])
            out["chosen"][idx], out["rejected"][idx] = lp.chosen_sum.double().cpu(), lp.rejected_sum.double().cpu()
        return out

    def _reference_of(self, group: np.ndarray, packed: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of a micro-batch: from the cache, computing only when a row is new."""
        if self.cache is None:  # TR-DPO: the reference moves every tau steps
            lp = self._reference_forward(packed)
            return lp.chosen_sum.float(), lp.rejected_sum.float()
        missing = ~self.cache.known[group]
        if missing.any():
            lp = self._reference_forward(packed)
            keep = self._device_tensor(np.flatnonzero(missing))
            self.cache.fill(group[missing], lp.chosen_sum[keep], lp.rejected_sum[keep], self._device_tensor(group[missing]))
        idx = self._device_tensor(group)
        return self.cache.chosen[idx], self.cache.rejected[idx]

    # ----------------------------------------------------------------------------------- step
    def _micro_batches(self, sampler: StageSampler, step: int) -> tuple[list[np.ndarray], list[Any]]:
        rows = rank_slice(sampler.rows(step), self.rank, self.world)
        groups = length_grouped(rows, self.train_pairs, self.config.optim.micro_batch)
        return groups, [self._pack(g, self.train_pairs) for g in groups]

    def step(self, groups: list[np.ndarray], packs: list[Any]) -> StepStats:
        """One optimizer step over this rank's micro-batches; statistics of the batch, all ranks summed."""
        cfg = self.config
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        sums = torch.zeros(4, dtype=dtype, device=self.device)  # loss, chosen reward, rejected reward, correct
        pairs = tokens = 0
        for k, (group, packed) in enumerate(zip(groups, packs, strict=True)):
            packed = packed.to(self.device, non_blocking=True)
            ref_c, ref_r = self._reference_of(group, packed)
            sync = k == len(groups) - 1
            with (contextlib.nullcontext() if sync else self.accelerator.no_sync(self.module)), self.accelerator.autocast():
                lp = self.module(packed)
                margin = None
                if self.controller is not None:
                    margin = self._device_tensor(self.controller.margins([self.train_cats[int(i)] for i in group]))
                loss, chosen_r, rejected_r = self.loss_fn(
                    lp.chosen_sum.float(), lp.rejected_sum.float(), ref_c, ref_r,
                    chosen_len=lp.chosen_len, rejected_len=lp.rejected_len, margin=margin,
                )
                if cfg.loss.sft_weight > 0:
                    loss = loss + cfg.loss.sft_weight * sft_nll(lp.chosen_sum.float(), lp.chosen_len)
                # DDP / FSDP average gradients over ranks: scaling by the world size makes the result
                # the mean over the whole effective batch.
                self.accelerator.backward(loss.sum() * self.world / self.effective)
            sums += torch.stack([loss.detach().sum(), chosen_r.sum(), rejected_r.sum(), (chosen_r > rejected_r).sum()]).to(dtype)
            pairs += len(group)
            tokens += sum(pair_length(self.train_pairs[int(i)]) for i in group)
        grad_norm = self.accelerator.clip_grad_norm_(self.policy.trainable_parameters(), cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        counts = self._device_tensor(np.asarray([pairs, tokens], dtype=np.float64)).to(dtype)
        totals = self.accelerator.reduce(torch.cat([sums, counts]), reduction="sum")
        norm = torch.as_tensor(grad_norm, device=self.device).reshape(1).to(dtype)  # identical on every rank
        loss_sum, chosen, rejected, correct, n_pairs, n_tokens, grad = torch.cat([totals, norm]).tolist()  # the step's one sync
        return StepStats(loss_sum, chosen, rejected, correct, int(n_pairs), int(n_tokens), grad)

    # -------------------------------------------------------------------------------- stages
    def _begin_stage(self, stage: Stage) -> StageSampler:
        """Fresh optimizer state and schedule (restored mid-stage on resume), and the stage's sampler."""
        opt = self.optimizer
        opt.state.clear()
        for group in opt.param_groups:
            group["lr"] = self.config.optim.lr
            group.pop("initial_lr", None)
        self.scheduler = lr_schedule(opt, self.config.optim, stage.steps)
        if self.resumed is not None and self.counters.stage_step > 0:
            opt.load_state_dict(self.resumed["optimizer"])
            self.scheduler.load_state_dict(self.resumed["scheduler"])
        self.resumed = None
        if stage.index == 0 and self.counters.stage_step == 0 and self.cache is not None:
            self._stage0_reference(stage)
        elif stage.index == 0 and self.cache is None:
            self._record_stage0({"source": "per_step", "reason": "ref_update='tr_dpo' moves the reference within a stage"})
        cur = self.config.curriculum
        return StageSampler(stage, effective_batch=self.effective, seed=self.config.seed, competence_kind=cur.competence,
                            c0=cur.c0, zero_based=cur.competence_step == "zero_based")

    def _record_stage0(self, info: dict[str, Any]) -> None:
        self.run_info["stage0_reference"] = info
        if self.accelerator.is_main_process:
            write_json(self.run_info, self.output / "run_info.json")

    def _stage0_reference(self, stage: Stage) -> None:
        """Prefill the cache with the scorer's stored log-probs when they fit this run and a live pass agrees."""
        data = self.config.data
        if not data.reuse_ref_logps:
            self._record_stage0({"source": "live", "reason": "data.reuse_ref_logps is false", "forward_dtype": self.forward})
            return
        stored = stored_ref_logprobs(self.staged, model_sha256=self.model_ref.sha256,
                                     template=self._pair_tokenizer(self.tokenizer).describe(), forward=self.forward)
        info: dict[str, Any] = {"source": "live", "reason": stored.reason, "forward_dtype": self.forward}
        if stored.usable:
            probe = np.sort(stage.rows[: data.reuse_check_rows])
            live = self.logprobs(self.train_pairs, reference=True, rows=probe)
            gap = float(max((torch.as_tensor(stored.chosen[probe]) - live["chosen"]).abs().max(),
                            (torch.as_tensor(stored.rejected[probe]) - live["rejected"]).abs().max()))
            info.update(checked_rows=len(probe), max_gap_nats=gap, tolerance_nats=data.reuse_tolerance)
            if gap <= data.reuse_tolerance:
                rows = np.arange(len(self.train_pairs))
                self.cache.fill(rows, torch.as_tensor(stored.chosen, device=self.device), torch.as_tensor(stored.rejected, device=self.device))
                logger.info("stage 0 reuses the stored ref_margin log-probs (largest summed gap %.3g nats on %d rows)", gap, len(probe))
                self._record_stage0({**info, "source": "stored"})
                return
            info["reason"] = (f"stored log-probs differ from a live pass by up to {gap:.4g} nats summed on {len(probe)} rows "
                              f"(tolerance {data.reuse_tolerance} nats)")
        logger.info("stage 0 computes its reference log-probs live: %s", info["reason"])
        self._record_stage0(info)

    def _after_step(self, stage: Stage, sampler: StageSampler, step: int, stats: StepStats, lr: float, started: float) -> dict[str, Any]:
        """Reference and Cat-DPO updates due after this step, then its metrics record."""
        cur, cfg = self.config.curriculum, self.config
        self.counters.global_step += 1
        self.counters.stage_step = step + 1
        if cur.ref_update == "tr_dpo" and self.counters.global_step % cur.tr_dpo_tau == 0:
            self.policy.soft_update(cur.tr_dpo_alpha)
            self.counters.reference_generation += 1
        if self.controller is not None and self.counters.global_step % cfg.cat_dpo.every == 0:
            now = self.logprobs(self.dev_pairs)
            h = (now["chosen"] - self.dev_pi0["chosen"]) - (now["rejected"] - self.dev_pi0["rejected"])
            self.controller.update(unsafe_rates(h, self.dev_cats))
        n = max(stats.pairs, 1)
        record = {
            "step": self.counters.global_step, "stage": stage.index, "stage_step": self.counters.stage_step,
            "loss": stats.loss / n, "chosen_reward": stats.chosen_reward / n, "rejected_reward": stats.rejected_reward / n,
            "margin": (stats.chosen_reward - stats.rejected_reward) / n, "accuracy": stats.correct / n,
            "competence": sampler.competence(step), "pool_size": sampler.pool_size(step), "lr": lr,
            "grad_norm": stats.grad_norm, "tokens": stats.tokens, "pairs_seen": int(self.seen.sum()),
            "time": round(time.time() - started, 3),
        }
        if self.controller is not None:
            record["gamma"] = dict(sorted(self.controller.gamma.items()))
            record["unsafe"] = dict(sorted(self.controller.unsafe.items()))
        return record

    def _end_stage(self, stage: Stage) -> None:
        if stage.ref_update and self.config.curriculum.ref_update == "hard":
            self.policy.hard_update(generation=stage.index + 1)
            self.counters.reference_generation += 1
            if self.cache is not None:
                self.cache.known[:] = False
            logger.info("stage %d done: reference updated to the policy", stage.index)
        self.counters.stage, self.counters.stage_step = stage.index + 1, 0
        if self.config.checkpoint.stage_ends:
            self.save(stage_end=True)

    # ------------------------------------------------------------------------------ checkpoint
    def save(self, *, stage_end: bool) -> None:
        """A checkpoint of everything an exact resume needs (main process writes, all wait)."""
        if self.accelerator.is_main_process:
            gen = self.counters.reference_generation
            if gen > 0:
                save_reference(self.output, gen, self.policy.reference_state())
            state = {**progress_state(self.counters, gen, self.cache, self.seen, self.dev_pi0, self.controller),
                     "model_ref": self.model_ref.as_dict()}
            optimizer = {} if stage_end else {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
            save_checkpoint(self.output, self.counters.global_step, trainable=self.policy.trainable_state(), optimizer=optimizer,
                            trainer_state=state, config=self.resolved, keep=self.config.checkpoint.keep, stage_end=stage_end)
        self.accelerator.wait_for_everyone()

    def _save_final(self) -> Path:
        if self.accelerator.is_main_process:
            save_outputs(self.output, policy=self.policy, model=None, tokenizer=self.tokenizer, config=self.config)
        self.accelerator.wait_for_everyone()
        return self.output / "final"

    # -------------------------------------------------------------------------------- the loop
    def train(self) -> TrainResult:
        """Setup, then every stage's steps with the reference update at its end, then the final model."""
        self.setup()
        total = sum(s.steps for s in self.stages)
        started, last = time.time(), {}
        for stage in self.stages[self.counters.stage :]:
            sampler = self._begin_stage(stage)
            ahead: Future[Any] = self.packer.submit(self._micro_batches, sampler, self.counters.stage_step)
            for step in range(self.counters.stage_step, stage.steps):
                groups, packs = ahead.result()
                if step + 1 < stage.steps:  # pack the next step's batches while this one computes
                    ahead = self.packer.submit(self._micro_batches, sampler, step + 1)
                self.seen[sampler.rows(step)] = True
                lr = self.scheduler.get_last_lr()[0]
                stats = self.step(groups, packs)
                last = self._after_step(stage, sampler, step, stats, lr, started)
                if self.accelerator.is_main_process:
                    with self.metrics_path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(last, sort_keys=True) + "\n")
                self.accelerator.log(tracker_metrics(last), step=last["step"])
                if self.progress is not None:
                    self.progress(last, total)
                every = self.config.checkpoint.every
                if every and self.counters.global_step % every == 0 and self.counters.stage_step < stage.steps:
                    self.save(stage_end=False)
            self._end_stage(stage)
        self.packer.shutdown()
        self.accelerator.end_training()
        final = self._save_final()
        return TrainResult(output=self.output, final_dir=final, global_step=self.counters.global_step, stages=len(self.stages), last_metrics=last)


def train(data: str | Path, output: str | Path, config: TrainConfig, *, resume: bool = False,
          progress: ProgressFn | None = None) -> TrainResult:
    """Train a policy on a staged dataset with the configured curriculum schedule.

    Args:
        data: staged dataset folder, or Hub dataset ``ORG/NAME[@REV]``.
        output: run folder: ``train_config.json``, ``metrics.jsonl``, ``run_info.json`` (the staged
            dataset's identity; where stage 0's reference log-probs came from:
            ``stage0_reference.source`` is ``stored``, ``live`` or ``per_step``, with the reason),
            ``checkpoints/``, ``final/`` (LoRA: the peft adapter; else the model; with the card),
            ``merged/`` (``output.merge``), ``logs/`` (``output.report_to='tensorboard'``).
        config: the resolved :class:`TrainConfig`; ``engine`` picks the native loop or TRL's
            ``DPOTrainer`` (:mod:`sc_data.train.trl_engine`), same curriculum and run folder.
        resume: continue from the latest checkpoint in ``output`` (exactly: same batches, same
            optimizer and scheduler state, same reference and reference log-probs).
        progress: called after each optimizer step (the CLI draws a progress bar with it).

    Returns:
        :class:`TrainResult`; ``output.push_to_hub`` also uploads ``final/`` (:func:`sc_data.train.push.push_run`).

    Raises:
        ConfigError: inconsistent options, or ``output`` holds a run and ``resume`` is False.
        InputError, VerifyError: the staged data is unusable.
        HubError: the push to ``output.push_to_hub`` failed (the run folder is complete).

    Example:
        >>> cfg = TrainConfig.from_dict({"model": {"name": "smollm2-135m-instruct"}})
        >>> train("staged/", "runs/sc", cfg)  # doctest: +SKIP
    """
    if config.engine == "trl":
        from sc_data.train.trl_engine import train_trl

        result = train_trl(data, output, config, resume=resume, progress=progress)
    else:
        result = CurriculumDPO(data, output, config, resume=resume, progress=progress).train()
    if config.output.push_to_hub is not None:
        from accelerate import PartialState

        from sc_data.train.push import push_run

        if PartialState().is_main_process:
            result.hub_commit = push_run(result.output, config.output.push_to_hub, private=config.output.private)
    return result
