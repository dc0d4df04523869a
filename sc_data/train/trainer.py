"""Curriculum DPO training (Staged-Competence, arXiv 2605.26315; Cat-DPO, arXiv 2604.17299).

:func:`train` reads top to bottom: setup (data, model, reference, stages, resume) → loop over
stages and optimizer steps → checkpoint at stage ends (and every N steps) → final merged model.
docs/ARCHITECTURE.md, "Training: the method as implemented", is the spec; the loss is the mean of the per-example loss over the
effective batch (micro batch × accumulation × world size).

Multi-process runs (``accelerate launch`` or ``torchrun``; gloo on CPU, nccl on GPU): every rank
draws the same global batch (the samplers are stateless), takes its own disjoint slice, and the
gradients are summed across ranks before clipping, which is what DDP computes; the sum is taken
explicitly because the shared log-prob core calls the decoder body directly, bypassing a DDP
wrapper's forward hooks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from sc_data.errors import ConfigError, InputError
from sc_data.io import temp_dir_beside, write_json, write_text
from sc_data.train.cat_dpo import CatDPOController, unsafe_rates
from sc_data.train.checkpoint import (
    base_source,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_states,
)
from sc_data.train.config import OptimConfig, TrainConfig
from sc_data.train.curriculum import Stage, StageSampler, build_stages, rank_slice
from sc_data.train.data import (
    LogProbTable,
    categories_of,
    compute_logprobs,
    length_grouped,
    load_staged,
    pair_length,
    stored_ref_logprobs,
    tokenize_table,
)
from sc_data.train.losses import build_loss, sft_nll
from sc_data.train.policy import PolicyPair

logger = logging.getLogger("sc_data.train")

#: Called after every optimizer step with (metrics record, total optimizer steps of the run).
ProgressFn = Callable[[dict[str, Any], int], None]

#: Stored reference log-probs are reused if their per-token means match a live pass this closely.
STORED_LOGP_ATOL = 0.05


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    final_dir: Path
    global_step: int
    stages: int
    last_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["output"], out["final_dir"] = str(self.output), str(self.final_dir)
        return out


@dataclass
class _Counters:
    stage: int = 0
    stage_step: int = 0
    global_step: int = 0


class _Dist:
    """Rank / world size from the launcher's environment; gloo on CPU, nccl on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """In-place sum across ranks of same-dtype tensors, flattened into one buffer on the
        communication device (nccl needs CUDA tensors, wherever the inputs live)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1).to(self.device) for t in tensors])
        torch_dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def _lr_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine / linear decay (or constant) over one stage, as transformers' schedules."""
    warmup = math.ceil(optim.warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if optim.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        if optim.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _column(table: Any, name: str, where: str) -> list[Any]:
    if name not in table.column_names:
        raise InputError(f"the staged training rows have no {name!r} column ({where}); re-run `sc-data stage` to add it")
    return table.column(name).to_pylist()


def _truncate_metrics(path: Path, global_step: int) -> None:
    """Drop metric lines past the checkpoint a run resumes from (they will be recomputed).

    A run killed mid-write can leave a torn last line; it is dropped with the rest.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] <= global_step:
            kept.append(line)
    write_text("".join(line + "\n" for line in kept), path)


def train(  # noqa: C901 - one function for setup, loop and cleanup until the accelerate rebuild splits it into a recipe
    data: str | Path,
    output: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a policy on a staged dataset with the configured curriculum schedule.

    Args:
        data: staged dataset folder, or Hub dataset ``ORG/NAME[@REV]``.
        output: run folder: ``train_config.json``, ``metrics.jsonl``, ``run_info.json`` (where stage
            0's reference log-probs came from: ``stage0_reference.source`` is ``stored``, ``live``
            or ``per_step``, with the reason), ``checkpoints/``, ``final/``.
        config: the resolved :class:`TrainConfig`.
        resume: continue from the latest checkpoint in ``output`` (exactly: same batches, same
            optimizer and scheduler state, same reference).
        progress: called after each optimizer step (the CLI draws a progress bar with it).

    Returns:
        :class:`TrainResult`; the merged model is in ``output/final``.

    Raises:
        ConfigError: inconsistent options, or ``output`` holds a run and ``resume`` is False.
        InputError, VerifyError: the staged data is unusable.

    Example:
        >>> cfg = TrainConfig.from_dict({"model": {"name": "smollm2-135m-instruct"}})
        >>> train("staged/", "runs/sc", cfg)  # doctest: +SKIP
    """
    from sc_data.models.loading import load_causal_lm, resolve_device, resolve_dtype
    from sc_data.models.logprob import PairTokenizer, TruncationConfig, pair_logprobs

    # ---------------------------------------------------------------- setup
    output = Path(output)
    device = resolve_device(config.model.device)
    compute_dtype = resolve_dtype(config.model.dtype, device)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if device.type == "cuda" and compute_dtype == torch.bfloat16
        else contextlib.nullcontext
    )
    dist = _Dist(device)
    _seed_everything(config.seed)
    checkpoint = latest_checkpoint(output) if resume else None
    if not resume and ((output / "metrics.jsonl").exists() or latest_checkpoint(output) is not None):
        raise ConfigError(f"{str(output)!r} already holds a training run; pass resume=True (--resume) or choose a new output folder")
    if output.is_dir() and any(output.iterdir()) and not (output / "train_config.json").is_file():
        raise ConfigError(
            f"{str(output)!r} holds files that are not an sc-data training run ({sorted(p.name for p in output.iterdir())[:5]}); "
            "train into a new or empty folder"
        )
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {str(output)!r} is a file; a training run is a folder: pass a new folder path")

    staged = load_staged(data)
    train_ids = [str(x) for x in _column(staged.train, "id", "pair ids")]
    difficulty = _column(staged.train, "difficulty", "difficulty in [0, 1]")
    tiers = _column(staged.train, "tier", "tier")
    train_cats = categories_of(staged.train)

    model, tokenizer, model_ref = load_causal_lm(
        config.model.name, device=config.model.device, dtype="float32", trust_remote_code=config.model.trust_remote_code
    )
    ref_dtype = compute_dtype if device.type == "cuda" else torch.float32
    policy = PolicyPair(model, lora=config.lora, ref_dtype=ref_dtype, adapter_seed=config.seed)
    pad_id = tokenizer.pad_token_id
    pair_tok = PairTokenizer(tokenizer, truncation=TruncationConfig(max_length=config.data.max_length, max_prompt_length=config.data.max_prompt_length))
    train_pairs = tokenize_table(pair_tok, staged.train)

    accum = config.grad_accum_for(dist.world)
    effective = config.optim.micro_batch * accum * dist.world
    cur = config.curriculum
    stages = build_stages(
        cur.schedule,
        tiers=tiers,
        difficulty=difficulty,
        ids=train_ids,
        effective_batch=effective,
        epochs_per_stage=cur.epochs_per_stage,
        horizon=cur.horizon,
        max_steps_per_stage=cur.max_steps_per_stage,
    )
    loss_fn = build_loss(config.loss.type, beta=config.loss.beta, label_smoothing=config.loss.label_smoothing)
    precompute_ref = cur.ref_update != "tr_dpo"  # a soft-updated reference moves every tau steps

    controller, dev_pairs, dev_cats, dev_pi0 = None, [], [], None
    if config.cat_dpo.enabled:
        if staged.dev is None or len(staged.dev) == 0:
            raise ConfigError("cat_dpo.enabled needs a dev split (data/dev/*.parquet) in the staged dataset; stage with a dev fraction or disable cat_dpo")
        cd = config.cat_dpo
        controller = CatDPOController(eta=cd.eta, target=cd.target, gamma_max=cd.gamma_max, ema=cd.ema, min_count=cd.min_count)
        dev_pairs, dev_cats = tokenize_table(pair_tok, staged.dev), categories_of(staged.dev)

    def logprobs_of(model_: Any, pairs: list[Any], rows: np.ndarray) -> LogProbTable:
        """Log-probs of ``rows``, split across ranks and gathered, so each rank holds all."""
        parts = dist.gather_objects((rows[dist.rank :: dist.world], _compute(model_, pairs, rows[dist.rank :: dist.world])))
        out = LogProbTable(*(torch.zeros(len(pairs), dtype=dt) for dt in (torch.float32, torch.float32, torch.long, torch.long)))
        for part_rows, table in parts:
            idx = torch.as_tensor(part_rows, dtype=torch.long)
            for name in ("chosen", "rejected", "chosen_len", "rejected_len"):
                getattr(out, name)[idx] = getattr(table, name)
        return out

    def _compute(model_: Any, pairs: list[Any], rows: np.ndarray) -> LogProbTable:
        if len(rows) == 0:
            return LogProbTable(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        with autocast():
            return compute_logprobs(model_, pairs, rows, micro_batch=config.optim.micro_batch, pad_token_id=pad_id)

    # LoRA: the frozen base changes only at stage ends, so step checkpoints reference the last
    # stage-end checkpoint's copy instead of rewriting it (base_from names that checkpoint).
    trainable = {name for name, p in policy.model.named_parameters() if p.requires_grad}
    base_keys = frozenset(k for k in policy.model.state_dict() if k not in trainable) if config.lora.enabled else frozenset()
    base_from: str | None = None

    counters = _Counters()
    resumed: dict[str, Any] | None = None
    if checkpoint is not None:
        base_from = base_source(checkpoint)
        resumed = load_checkpoint(checkpoint)
        policy.load_state_dicts(resumed["weights"])
        state = resumed["trainer_state"]
        counters = _Counters(**state["counters"])
        dev_pi0 = LogProbTable(**state["dev_pi0"]) if state["dev_pi0"] is not None else None
        if controller is not None:
            controller.load_state_dict(state["cat_dpo"])
        set_rng_states(state["rng"])
        logger.info("resuming from %s (stage %d, step %d)", checkpoint, counters.stage, counters.stage_step)
    elif controller is not None:
        with policy.reference_model() as pi0:  # π₀: the reference before any update
            dev_pi0 = logprobs_of(pi0, dev_pairs, np.arange(len(dev_pairs)))

    resolved = config.model_dump(mode="json")
    metrics_path = output / "metrics.jsonl"
    if dist.main:
        output.mkdir(parents=True, exist_ok=True)
        write_json(resolved, output / "train_config.json")
        _truncate_metrics(metrics_path, counters.global_step)

    def trainer_state() -> dict[str, Any]:
        return {
            "counters": asdict(counters),
            "dev_pi0": asdict(dev_pi0) if dev_pi0 is not None else None,
            "cat_dpo": controller.state_dict() if controller is not None else None,
            "model_ref": model_ref.as_dict(),
        }

    def checkpoint_now(optimizer_state: dict[str, Any], *, stage_end: bool) -> str:
        if dist.main:
            save_checkpoint(
                output, counters.global_step, weights=policy.state_dicts(), optimizer=optimizer_state, trainer_state=trainer_state(),
                config=resolved, keep=config.checkpoint.keep, stage_end=stage_end, base_from=base_from, base_keys=base_keys,
            )
        dist.barrier()
        return checkpoint_name(counters.global_step)

    run_info_path = output / "run_info.json"
    run_info: dict[str, Any] = json.loads(run_info_path.read_text("utf-8")) if checkpoint is not None and run_info_path.is_file() else {}

    def record_stage0_reference(info: dict[str, Any]) -> None:
        """Say in ``run_info.json`` where stage 0's reference log-probs came from, and why."""
        run_info["stage0_reference"] = info
        if dist.main:
            write_json(run_info, run_info_path)

    def stored_stage0_reference(stage: Stage, ref_model: Any) -> LogProbTable | None:
        """The scorer's stored log-probs for stage 0, if they fit this run and agree with a live pass."""
        stored = stored_ref_logprobs(
            staged, model_sha256=model_ref.sha256, template=pair_tok.describe(), torch_dtype=str(ref_dtype).removeprefix("torch.")
        )
        info: dict[str, Any] = {"source": "live", "reason": stored.reason}
        if stored.usable:
            probe = stage.rows[:4]
            live = _compute(ref_model, train_pairs, probe)
            table = LogProbTable(
                torch.as_tensor(stored.chosen, dtype=torch.float32), torch.as_tensor(stored.rejected, dtype=torch.float32),
                torch.tensor([len(p.chosen_ids) for p in train_pairs]), torch.tensor([len(p.rejected_ids) for p in train_pairs]),
            )
            idx = torch.as_tensor(probe)
            gap = max(
                ((table.chosen[idx] - live.chosen) / live.chosen_len.clamp(min=1)).abs().max().item(),
                ((table.rejected[idx] - live.rejected) / live.rejected_len.clamp(min=1)).abs().max().item(),
            )
            info.update(checked_rows=len(probe), max_gap=gap)
            if gap <= STORED_LOGP_ATOL:
                logger.info("stage 0 reuses the stored ref_margin log-probs (max per-token gap %.4g on %d rows)", gap, len(probe))
                record_stage0_reference({**info, "source": "stored"})
                return table
            info["reason"] = f"stored log-probs differ from a live pass by {gap:.4g} nats/token on {len(probe)} rows (tolerance {STORED_LOGP_ATOL})"
        logger.info("stage 0 computes its reference log-probs live: %s", info["reason"])
        record_stage0_reference(info)
        return None

    def stage_reference(stage: Stage) -> LogProbTable | None:
        """A stage's reference log-probs, computed once (None: the reference moves, per step)."""
        if not precompute_ref:
            if stage.index == 0:
                record_stage0_reference({"source": "per_step", "reason": "ref_update='tr_dpo' moves the reference within a stage"})
            return None
        with policy.reference_model() as ref_model:
            if stage.index == 0:
                if not config.data.reuse_ref_logps:
                    record_stage0_reference({"source": "live", "reason": "data.reuse_ref_logps is false"})
                elif (table := stored_stage0_reference(stage, ref_model)) is not None:
                    return table
            return logprobs_of(ref_model, train_pairs, stage.rows)

    # ---------------------------------------------------------------- loop
    total_steps = sum(s.steps for s in stages)
    started = time.time()
    last: dict[str, Any] = {}
    for stage in stages[counters.stage :]:
        params = policy.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        scheduler = _lr_schedule(optimizer, config.optim, stage.steps)
        if resumed is not None and counters.stage_step > 0:
            optimizer.load_state_dict(resumed["optimizer"]["optimizer"])
            scheduler.load_state_dict(resumed["optimizer"]["scheduler"])
        resumed = None
        ref_table = stage_reference(stage)
        sampler = StageSampler(stage, effective_batch=effective, seed=config.seed, competence_kind=cur.competence, c0=cur.c0)

        for step in range(counters.stage_step, stage.steps):
            mine = rank_slice(sampler.rows(step), dist.rank, dist.world)
            sums = torch.zeros(6, dtype=torch.float64)  # loss, chosen reward, rejected reward, correct, pairs, tokens
            for group in length_grouped(mine, train_pairs, config.optim.micro_batch):
                batch = [train_pairs[int(i)] for i in group]
                idx = torch.as_tensor(group, dtype=torch.long)
                if ref_table is None:
                    with torch.no_grad(), policy.reference_model() as ref_model, autocast():
                        ref_lp = pair_logprobs(ref_model, batch, pad_token_id=pad_id)
                    ref_c, ref_r = ref_lp.chosen_sum.float(), ref_lp.rejected_sum.float()
                else:
                    ref_c, ref_r = ref_table.chosen[idx].to(device), ref_table.rejected[idx].to(device)
                with autocast():
                    lp = pair_logprobs(policy.model, batch, pad_token_id=pad_id)
                margin = controller.margins([train_cats[int(i)] for i in group]).to(device) if controller is not None else None
                loss, chosen_r, rejected_r = loss_fn(
                    lp.chosen_sum.float(), lp.rejected_sum.float(), ref_c, ref_r,
                    chosen_len=lp.chosen_len, rejected_len=lp.rejected_len, margin=margin,
                )
                if config.loss.sft_weight > 0:
                    loss = loss + config.loss.sft_weight * sft_nll(lp.chosen_sum.float(), lp.chosen_len)
                (loss.sum() / effective).backward()
                sums += torch.tensor([
                    loss.sum().item(), chosen_r.sum().item(), rejected_r.sum().item(),
                    (chosen_r > rejected_r).sum().item(), len(group), sum(pair_length(p) for p in batch),
                ], dtype=torch.float64)
            for p in params:  # a rank whose micro-batches never touched p still joins the sum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            dist.sum_([p.grad for p in params])
            dist.sum_([sums])
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            counters.global_step += 1
            counters.stage_step = step + 1

            if cur.ref_update == "tr_dpo" and counters.global_step % cur.tr_dpo_tau == 0:
                policy.soft_update(cur.tr_dpo_alpha)
            if controller is not None and counters.global_step % config.cat_dpo.every == 0:
                now = logprobs_of(policy.model, dev_pairs, np.arange(len(dev_pairs)))
                h = (now.chosen - dev_pi0.chosen) - (now.rejected - dev_pi0.rejected)
                controller.update(unsafe_rates(h, dev_cats))

            n = sums[4].item()
            last = {
                "step": counters.global_step,
                "stage": stage.index,
                "stage_step": counters.stage_step,
                "loss": sums[0].item() / n,
                "chosen_reward": sums[1].item() / n,
                "rejected_reward": sums[2].item() / n,
                "margin": (sums[1].item() - sums[2].item()) / n,
                "accuracy": sums[3].item() / n,
                "competence": sampler.competence(step),
                "pool_size": sampler.pool_size(step),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens": int(sums[5].item()),
                "time": round(time.time() - started, 3),
            }
            if controller is not None:
                last["gamma"] = dict(sorted(controller.gamma.items()))
                last["unsafe"] = dict(sorted(controller.unsafe.items()))
            if dist.main:
                with metrics_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(last, sort_keys=True) + "\n")
            if progress is not None:
                progress(last, total_steps)
            every = config.checkpoint.every
            if every and counters.global_step % every == 0 and counters.stage_step < stage.steps:
                checkpoint_now({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, stage_end=False)

        # ------------------------------------------------------------ stage end
        if stage.ref_update and cur.ref_update == "hard":
            policy.hard_update(generation=stage.index + 1)
            logger.info("stage %d done: reference updated to the policy", stage.index)
        counters.stage, counters.stage_step = stage.index + 1, 0
        base_from = checkpoint_now({}, stage_end=True) if config.checkpoint.stage_ends else None

    # ---------------------------------------------------------------- cleanup
    final = output / "final"
    if dist.main:
        merged = policy.merged()
        tmp = temp_dir_beside(output / "final")
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(resolved, tmp / "train_config.json")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    dist.barrier()
    return TrainResult(output=output, final_dir=final, global_step=counters.global_step, stages=len(stages), last_metrics=last)
