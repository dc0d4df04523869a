"""Does the curriculum help? The Staged-Competence comparison (arXiv 2605.26315) at small scale.

A thin driver over the library, writing to ``--work``; the preparation (steps 1-5) is cached whole
in ``prep.json`` and, if interrupted, resumes (scored parts are kept):

1. ingest the paper's released pairs and draw ``data.train_pool`` of them (before scoring, so
   scoring stays cheap);
2. score them with ``similarity`` (the paper's difficulty: the scorer generates π₀'s answers,
   seeded per row) and ``ref_margin``;
3. stage once with the main signal (3 equal tiers, 20 % eval, seed 42): this fixes the eval
   split for every run; the training rows are re-staged per difficulty signal and budget with no
   further eval split, so every run is measured on the same held-out pairs;
4. ingest the OOD pairs (HH harmless-base test), drop those whose first user turn occurs among
   the paper's prompts, draw ``data.ood_pairs``; draw ``data.xstest_prompts`` safe XSTest prompts;
5. π₀'s log-probs on eval and OOD pairs and its XSTest over-refusal, once;
6. train every run (five schedules with the same epochs per stage, so the same optimizer steps
   when the tiers are equal; shuffled and staged_competence at a 75 % budget, which keep the
   epochs and so take fewer steps; staged_competence per difficulty signal) over the seeds,
   evaluate, record how many distinct training pairs each run drew, and write
   ``--out/results/<run>.json``; a finished run is skipped on re-runs;
7. write ``--out/RESULTS.md`` (``report.py`` and its template) and the plots from every result found.

Example (from the repository root):
    python -m experiments.reproduce.run --config experiments/reproduce/config.yaml
    python -m experiments.reproduce.run --config experiments/reproduce/gpu/config.yaml --work .carry/gpu/work --stop-after prepare
    python -m experiments.reproduce.run --config experiments/reproduce/gpu/config.yaml --work .carry/gpu/work --coverage
    python -m experiments.reproduce.run --set seeds=[0,1,2] --set data.train_pool=3969 --work /data/repro
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sc_data.config import load_config, parse_assignments
from sc_data.errors import config_error
from sc_data.io import write_json
from sc_data.train.curriculum import SCHEDULES

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "data"
Signal = Literal["similarity", "ref_margin", "mean"]
SIGNAL_COLUMNS: dict[str, list[str]] = {
    "similarity": ["similarity__margin:easier"],
    "ref_margin": ["ref_margin__margin_mean:easier"],
    "mean": ["similarity__margin:easier", "ref_margin__margin_mean:easier"],
}


# ---------------------------------------------------------------------------- configuration
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    train_pool: int = Field(300, ge=10, description="Pairs drawn from the paper's set before scoring (eval included).")
    ood_pairs: int = Field(60, ge=1, description="OOD pairs kept after the overlap filter.")
    xstest_prompts: int = Field(25, ge=1, le=250, description="Safe XSTest prompts used for over-refusal.")
    seed: int = 42


class ScoreSection(_Section):
    model: str = Field("smollm2-135m-instruct", description="π₀: generator, reference and the trained model.")
    encoder: str = Field("all-minilm-l6-v2", description="Sentence encoder of the similarity signal (the paper: all-MiniLM-L6-v2).")
    signals: list[Literal["similarity", "ref_margin"]] = Field(default_factory=lambda: ["similarity", "ref_margin"], min_length=1)
    similarity_max_new_tokens: int = Field(32, ge=1, description="Answer length of the unaligned model (paper: 512).")
    similarity_temperature: float = Field(0.7, gt=0)


class StageSection(_Section):
    tiers: int = Field(3, ge=1)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    budget: float = Field(0.75, gt=0, le=1, description="Data fraction of the budget runs (paper: 0.75).")


class TrainSection(_Section):
    epochs_per_stage: float = Field(
        1.0, ge=1.0, description="Passes over each stage (≥ 1, so shuffled, sequential and curri_dpo draw every training pair).",
    )
    horizon: float = Field(
        1.0, gt=0, le=1, description="Competence horizon, a fraction of a stage's steps (< 1: c = 1 earlier, so the "
        "competence schedules then sample the whole stage long enough to draw every pair; see --coverage).",
    )
    effective_batch: int = Field(8, ge=1)
    micro_batch: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    beta: float = Field(0.1, gt=0)
    lora: bool = True
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(32, gt=0)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    max_length: int = Field(128, ge=8)
    max_prompt_length: int = Field(64, ge=4)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (saves memory, costs time).")


class EvalSection(_Section):
    batch_size: int = Field(8, ge=1)
    xstest_max_new_tokens: int = Field(24, ge=1)
    judge: bool = Field(True, description="Also rate XSTest answers with the local judge (π₀ on the bundled refusal rubric).")
    judge_max_length: int = Field(1024, ge=64, description="Judge prompt tokens (rubric + question + answer).")


class ExperimentConfig(_Section):
    """The whole experiment; ``config.yaml`` documents each value."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    threads: int | None = Field(1, ge=1, description="torch.set_num_threads; None leaves torch's default.")
    device: str = "auto"
    main_signal: Literal["similarity", "ref_margin"] = "similarity"
    data: DataSection = Field(default_factory=DataSection)
    score: ScoreSection = Field(default_factory=ScoreSection)
    stage: StageSection = Field(default_factory=StageSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _main_signal_is_scored(self) -> ExperimentConfig:
        if self.main_signal not in self.score.signals:
            raise ValueError(f"main_signal {self.main_signal!r} must be one of score.signals {self.score.signals}")
        return self


def experiment_config(path: Path | None, overrides: list[str]) -> ExperimentConfig:
    """The YAML file, then ``KEY=VALUE`` overrides (``--set``), validated like every verb's config.

    Raises:
        ConfigError: an unknown key, a wrong type, or an inconsistent choice.
    """
    data = load_config(path, parse_assignments(overrides, flag="--set", example="train.lr=5e-5"))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise config_error("experiment config", e) from None


@dataclass(frozen=True)
class RunSpec:
    """One training run of the sweep."""

    schedule: str
    signal: Signal
    budget: float
    seed: int

    @property
    def variant(self) -> str:
        return f"{self.signal}-b{round(self.budget * 100)}"

    @property
    def name(self) -> str:
        return f"{self.schedule}__{self.variant}__s{self.seed}"


def plan_runs(cfg: ExperimentConfig) -> list[RunSpec]:
    """Five schedules on the main signal, two budget runs, one staged_competence row per other signal."""
    signals: list[Signal] = [s for s in ("similarity", "ref_margin") if s in cfg.score.signals and s != cfg.main_signal]
    if len(cfg.score.signals) == 2:
        signals.append("mean")
    runs = []
    for seed in cfg.seeds:
        runs += [RunSpec(s, cfg.main_signal, 1.0, seed) for s in SCHEDULES]
        if cfg.stage.budget < 1.0:
            runs += [RunSpec(s, cfg.main_signal, cfg.stage.budget, seed) for s in ("shuffled", "staged_competence")]
        runs += [RunSpec("staged_competence", sig, 1.0, seed) for sig in signals]
    return runs


def planned_tier_sizes(cfg: ExperimentConfig, budget: float = 1.0) -> list[int]:
    """The tier sizes the config plans, before anything is staged: the training share of the pool in
    ``stage.tiers`` equal tiers, each cut to ``budget`` (a uniform budget keeps that share per tier).

    Exact when the pool's prompts are distinct (the paper's pairs drawn here are: the eval split
    then takes exactly ``eval_fraction`` of the pool) and the difficulty has no ties; the staged
    sizes in ``prep.json`` are the ones the runs use and ``--coverage`` checks after the preparation.
    """
    train = cfg.data.train_pool - round(cfg.data.train_pool * cfg.stage.eval_fraction)
    return [round(len(t) * budget) for t in np.array_split(np.arange(train), cfg.stage.tiers)]


def planned_coverage(cfg: ExperimentConfig, spec: RunSpec, tier_sizes: list[int]) -> tuple[int, float]:
    """(optimizer steps, share of training pairs drawn at least once) of one planned run, before it runs.

    Exact, not an estimate: the trainer's samplers are pure functions of (seed, stage, step), and
    which positions a competence step draws depends on the tier sizes alone, not on the
    difficulty values; so this replays the run's batches without a model. The competence
    schedules sample with replacement (as the reference code does), so only enough epochs and a
    horizon < 1 make them draw every pair.
    """
    from sc_data.train.curriculum import StageSampler, build_stages

    tiers = [k for k, n in enumerate(tier_sizes) for _ in range(n)]
    n = len(tiers)
    stages = build_stages(spec.schedule, tiers=tiers, difficulty=[0.0] * n, ids=[f"{i:09d}" for i in range(n)],  # type: ignore[arg-type]
                          effective_batch=cfg.train.effective_batch, epochs_per_stage=cfg.train.epochs_per_stage,
                          horizon=cfg.train.horizon)
    seen = np.zeros(n, dtype=bool)
    for stage in stages:
        sampler = StageSampler(stage, effective_batch=cfg.train.effective_batch, seed=spec.seed)
        for step in range(stage.steps):
            seen[sampler.rows(step)] = True
    return sum(s.steps for s in stages), float(seen.mean())


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- data preparation
def _take(table: pa.Table, n: int, seed: int) -> pa.Table:
    """``n`` rows drawn without replacement (all rows if fewer), in drawn order."""
    rng = np.random.default_rng(seed)
    return table.take(pa.array(rng.permutation(len(table))[: min(n, len(table))]))


def _score_pool(cfg: ExperimentConfig, work: Path) -> None:
    """Both difficulty signals through the library's scorers (resumable: an interruption keeps its parts)."""
    from sc_data.scorers.runner import score

    options: dict[str, dict[str, Any]] = {
        "ref_margin": {"model": cfg.score.model, "device": cfg.device, "max_length": cfg.train.max_length,
                       "max_prompt_length": cfg.train.max_prompt_length},
        "similarity": {"model": cfg.score.model, "encoder": cfg.score.encoder, "device": cfg.device,
                       "max_new_tokens": cfg.score.similarity_max_new_tokens, "temperature": cfg.score.similarity_temperature,
                       "seed": cfg.data.seed},
    }
    signals = list(cfg.score.signals)
    score(work / "pool.parquet", work / "scored.parquet", scorers=signals, options={s: options[s] for s in signals},
          part_rows=25, resume=True, overwrite=True)


def _stage_variants(cfg: ExperimentConfig, work: Path, info: dict[str, Any]) -> None:
    """One fixed eval split by the main signal, then the training rows re-staged per signal and budget."""
    from sc_data.manifest import manifest_path
    from sc_data.stage.folder import read_staged
    from sc_data.stage.pipeline import stage

    common = {"tiers": cfg.stage.tiers, "seed": cfg.stage.seed, "plots": False, "overwrite": True}
    split = stage(work / "scored.parquet", work / "staged" / "split", eval_fraction=cfg.stage.eval_fraction,
                  difficulty_columns=SIGNAL_COLUMNS[cfg.main_signal], **common)
    info["split"] = split.to_dict()
    train_ids = set(read_staged(work / "staged" / "split").train.column("id").to_pylist())
    scored = pq.read_table(work / "scored.parquet")
    pq.write_table(scored.filter(pa.array([i in train_ids for i in scored.column("id").to_pylist()])), work / "train_rows.parquet")
    shutil.copy(manifest_path(work / "scored.parquet"), manifest_path(work / "train_rows.parquet"))  # keeps stage-0 log-prob reuse
    info["variants"] = {}
    for spec in plan_runs(cfg):
        if spec.variant not in info["variants"]:
            res = stage(work / "train_rows.parquet", work / "staged" / spec.variant, eval_fraction=0.0,
                        budget=spec.budget, difficulty_columns=SIGNAL_COLUMNS[spec.signal], **common)
            info["variants"][spec.variant] = {"tiers": res.tiers, "rows": res.splits["train"]}


def _ood_and_xstest(cfg: ExperimentConfig, args: argparse.Namespace, work: Path, info: dict[str, Any]) -> None:
    """OOD pairs whose first user turn the paper's set never asks, and a sample of XSTest's safe prompts."""
    import pandas as pd

    from sc_data.ingest import ingest
    from sc_data.schema import normalised_prompt_key

    ood = ingest([args.ood_data], work / "ood_all.parquet", overwrite=True)  # the work folder is ours: a re-run replaces
    seen = {normalised_prompt_key(p[:1]) for p in pq.read_table(work / "paper.parquet").column("prompt").to_pylist()}
    ood_all = pq.read_table(work / "ood_all.parquet")
    first_user = [normalised_prompt_key([next((m for m in p if m["role"] == "user"), p[0])]) for p in ood_all.column("prompt").to_pylist()]
    keep = [k not in seen for k in first_user]
    sample = _take(ood_all.filter(pa.array(keep)), cfg.data.ood_pairs, cfg.data.seed)
    pq.write_table(sample, work / "ood.parquet")
    info["ood"] = {"ingested": ood.rows_out, "rejected_at_ingest": ood.rows_rejected, "dropped_overlap": int(len(keep) - sum(keep)),
                   "kept_after_filter": int(sum(keep)), "used": len(sample)}
    xs = pd.read_csv(args.xstest)
    safe = xs[xs["label"] == "safe"]
    chosen = safe.sample(n=min(cfg.data.xstest_prompts, len(safe)), random_state=cfg.data.seed)
    info["xstest"] = {"safe_total": int(len(safe)), "used": int(len(chosen)), "types": chosen["type"].value_counts().to_dict(),
                      "prompts": chosen["prompt"].tolist()}


def prepare(cfg: ExperimentConfig, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; returns (and caches) what the runs need."""
    from sc_data.ingest import ingest

    info_path = work / "prep.json"
    if info_path.is_file():
        return json.loads(info_path.read_text("utf-8"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info: dict[str, Any] = {"timings_s": {}}
    info["paper_rows"] = ingest([args.paper_data], work / "paper.parquet", overwrite=True).rows_out
    pq.write_table(_take(pq.read_table(work / "paper.parquet"), cfg.data.train_pool, cfg.data.seed), work / "pool.parquet")
    _score_pool(cfg, work)
    info["timings_s"]["score"] = round(time.time() - t0, 1)
    _stage_variants(cfg, work, info)
    _ood_and_xstest(cfg, args, work, info)
    info["timings_s"]["prepare_total"] = round(time.time() - t0, 1)
    write_json(info, info_path)
    return info


def measure_pi0(cfg: ExperimentConfig, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Step 5, cached in ``prep.json`` beside steps 1-4: apart, so the data can be prepared on one
    machine (the CPU: scoring) and π₀ measured on the one that trains (the GPU: same kernels)."""
    if "pi0" not in info:
        t0 = time.time()
        info["pi0"] = measure_model(cfg, cfg.score.model, work, info)
        info["timings_s"]["pi0"] = round(time.time() - t0, 1)
        write_json(info, work / "prep.json")
    return info


# ---------------------------------------------------------------------------- measurement
def _eval_sets(work: Path) -> dict[str, pa.Table]:
    from sc_data.stage.folder import read_staged

    return {"eval": read_staged(work / "staged" / "split").eval, "ood": pq.read_table(work / "ood.parquet")}


def measure_model(cfg: ExperimentConfig, model_ref: str, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Summed answer log-probs on eval/OOD pairs and XSTest over-refusal of one model (the library's evaluation)."""
    from sc_data.models.loading import load_causal_lm
    from sc_data.models.logprob import TruncationConfig
    from sc_data.train.evaluate import answer_logprobs, generate_answers, generation_rates

    model, tok, _ = load_causal_lm(model_ref, device=cfg.device, dtype="float32")
    truncation = TruncationConfig(max_length=cfg.train.max_length, max_prompt_length=cfg.train.max_prompt_length)
    out: dict[str, Any] = {}
    for name, table in _eval_sets(work).items():
        lp = answer_logprobs(model, tok, table, truncation=truncation, batch_size=cfg.eval.batch_size)
        out[name] = {"ids": table.column("id").to_pylist(), "chosen": lp.chosen.double().tolist(), "rejected": lp.rejected.double().tolist()}
    judge = ({"backend": "local", "model": cfg.score.model, "device": cfg.device, "dtype": "float32",
              "max_length": cfg.eval.judge_max_length, "batch_size": cfg.eval.batch_size} if cfg.eval.judge else None)
    prompts = info["xstest"]["prompts"]
    answers = generate_answers(model, tok, prompts, max_new_tokens=cfg.eval.xstest_max_new_tokens, batch_size=cfg.eval.batch_size)
    gen = generation_rates(prompts, answers, kind="benign", judge=judge)
    out["xstest"] = {"n": gen["n"], "over_refusal": gen["over_refusal_rate"], "refused": gen["refused"], "samples": gen["samples"][:5]}
    if judge is not None:
        out["xstest"].update(over_refusal_judge=gen["over_refusal_rate_judge"], judge_errors=gen["judge_errors"],
                             refused_judge=gen["judged"])
    return out


class _LogProbs:
    """Stored log-prob lists seen as the ``chosen`` / ``rejected`` rows ``preference_metrics`` reads."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.chosen, self.rejected = record["chosen"], record["rejected"]


# ---------------------------------------------------------------------------- one run
def train_config(cfg: ExperimentConfig, spec: RunSpec) -> Any:
    from sc_data.train.config import TrainConfig

    t = cfg.train
    return TrainConfig.from_dict({
        "seed": spec.seed,
        "model": {"name": cfg.score.model, "device": cfg.device, "gradient_checkpointing": t.gradient_checkpointing},
        "lora": {"enabled": t.lora, "r": t.lora_r, "alpha": t.lora_alpha, "target_modules": t.lora_targets},
        "loss": {"type": "sigmoid", "beta": t.beta},
        "curriculum": {"schedule": spec.schedule, "epochs_per_stage": t.epochs_per_stage, "horizon": t.horizon},
        "optim": {"lr": t.lr, "lr_schedule": t.lr_schedule, "warmup_ratio": t.warmup_ratio, "micro_batch": t.micro_batch,
                  "effective_batch": t.effective_batch},
        "data": {"max_length": t.max_length, "max_prompt_length": t.max_prompt_length},
        "checkpoint": {"stage_ends": False},
    })


def run_one(cfg: ExperimentConfig, spec: RunSpec, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Train one run, measure it against π₀, and return its result record."""
    from sc_data.stage.folder import read_staged
    from sc_data.train.evaluate import eval_tiers, preference_metrics
    from sc_data.train.trainer import train

    sizes = list(info["variants"][spec.variant]["tiers"].values())
    run_dir = work / "runs" / spec.name
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run restarts from scratch (no stage checkpoints kept)
    t0 = time.time()
    result = train(work / "staged" / spec.variant, run_dir, train_config(cfg, spec))
    train_s = time.time() - t0
    measured, pi0 = measure_model(cfg, str(result.final_dir), work, info), info["pi0"]
    split = read_staged(work / "staged" / "split")
    tiers = eval_tiers(split.eval, split.train)
    no_category = [None] * len(tiers)
    on_eval = preference_metrics(_LogProbs(measured["eval"]), _LogProbs(pi0["eval"]), tiers=tiers, categories=no_category)
    on_ood = preference_metrics(_LogProbs(measured["ood"]), _LogProbs(pi0["ood"]), tiers=np.full(len(pi0["ood"]["ids"]), -1),
                                categories=[None] * len(pi0["ood"]["ids"]))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text("utf-8").splitlines() if line.strip()]
    run_info = json.loads((run_dir / "run_info.json").read_text("utf-8")) if (run_dir / "run_info.json").is_file() else {}
    record = {
        "name": spec.name, "schedule": spec.schedule, "signal": spec.signal, "budget": spec.budget, "seed": spec.seed,
        "train_rows": sum(sizes), "tier_sizes": sizes, "epochs_per_stage": cfg.train.epochs_per_stage, "steps": result.global_step,
        "stages": result.stages, "pairs_seen": metrics[-1]["pairs_seen"],
        "eval": on_eval["overall"], "eval_by_tier": on_eval["by_tier"], "ood": on_ood["overall"],
        "xstest": {k: v for k, v in measured["xstest"].items() if k not in ("refused", "refused_judge")},
        "stage0_reference": run_info.get("stage0_reference"),
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "trajectory": [{k: m[k] for k in ("step", "stage", "margin", "loss", "accuracy", "competence", "pool_size")} for m in metrics],
    }
    shutil.rmtree(run_dir / "final", ignore_errors=True)  # 0.5 GB per run; metrics.jsonl stays
    return record


# ---------------------------------------------------------------------------- main
def print_coverage(cfg: ExperimentConfig, runs: list[RunSpec], work: Path) -> int:
    """``--coverage``: one line per planned run; 1 when some run would leave training pairs undrawn.

    On the staged tier sizes once ``work`` holds the preparation, else on the config's planned ones
    (:func:`planned_tier_sizes`), so a cut can be sized before the (slow) scoring.
    """
    info_path = work / "prep.json"
    variants = json.loads(info_path.read_text("utf-8"))["variants"] if info_path.is_file() else None
    log(f"coverage on the {'staged tier sizes of ' + str(info_path) if variants else 'planned tier sizes (no preparation yet)'}")
    short = []
    for spec in runs:
        sizes = list(variants[spec.variant]["tiers"].values()) if variants else planned_tier_sizes(cfg, spec.budget)
        steps, seen = planned_coverage(cfg, spec, sizes)
        print(f"{spec.name}\t{steps} steps\t{100 * seen:.1f} % of pairs drawn")
        if seen < 1.0:
            short.append(spec.name)
    if short:
        log(f"{len(short)} run(s) would not draw every training pair: {', '.join(short)}; raise train.epochs_per_stage or lower train.horizon")
    return 1 if short else 0


def main(argv: list[str] | None = None) -> int:
    from experiments.reproduce.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("Example (from the repository root):")[1])
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="dotted override, YAML value")
    parser.add_argument("--paper-data", default=str(SHARED / "paper" / "hh_rlhf_clean_gpt.jsonl"))
    parser.add_argument("--ood-data", default=str(SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"))
    parser.add_argument("--xstest", default=str(SHARED / "xstest" / "xstest_prompts.csv"))
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "sc-data" / "reproduce", help="large intermediates")
    parser.add_argument("--out", type=Path, default=HERE, help="results/*.json, RESULTS.md, plots")
    parser.add_argument("--only", default=None, help="comma-separated run names (see --list) to run now, in this order")
    parser.add_argument("--list", action="store_true", help="print the planned run names and exit")
    parser.add_argument("--report-only", action="store_true", help="write RESULTS.md from the results present")
    parser.add_argument("--stop-after", choices=("prepare", "pi0"), default=None,
                        help="stop after steps 1-4 (prepare: the CPU part, scoring) or after π₀'s measurement (step 5)")
    parser.add_argument("--coverage", action="store_true",
                        help="print each planned run's steps and pairs drawn (exact, no model; on the staged tier sizes of --work's "
                             "preparation, else the config's planned ones); exit 1 if any is below 100 %%")
    parser.add_argument("--note", action="append", default=[], help="a provenance line for RESULTS.md (how the sweep was run)")
    args = parser.parse_args(argv)
    cfg = experiment_config(args.config, args.overrides)
    runs = plan_runs(cfg)
    if args.list:
        print("\n".join(r.name for r in runs))
        return 0
    by_name = {r.name: r for r in runs}
    unknown = [n for n in (args.only or "").split(",") if n and n not in by_name]
    if unknown:
        raise SystemExit(f"--only names no planned run: {unknown}; see --list")
    todo = [by_name[n] for n in args.only.split(",")] if args.only else runs  # --only keeps its own order
    if args.coverage:
        return print_coverage(cfg, runs, args.work)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    info = prepare(cfg, args, args.work)
    if args.stop_after == "prepare":
        return 0
    info = measure_pi0(cfg, args.work, info)
    if args.stop_after == "pi0":
        return 0
    results_dir = args.out / "results"
    for spec in [] if args.report_only else todo:
        path = results_dir / f"{spec.name}.json"
        if not path.is_file():
            log(f"run {spec.name}")
            record = run_one(cfg, spec, args.work, info)
            write_json(record, path)
            log(f"  done in {record['total_wall_s']} s: eval acc {record['eval']['accuracy']:.3f}, OOD acc {record['ood']['accuracy']:.3f}")
    results = [json.loads(p.read_text("utf-8")) for p in sorted(results_dir.glob("*.json")) if p.stem in by_name] if results_dir.is_dir() else []
    if results:
        given = list(argv if argv is not None else sys.argv[1:])
        shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
        command = "python -m experiments.reproduce.run " + " ".join(shown) + (" --note … (the lines below)" if args.note else "")
        log(f"wrote {write_report(cfg, info, results, plan_runs(cfg), args.out, command, args.note)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
