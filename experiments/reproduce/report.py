"""RESULTS.md of the reproduction: the numbers computed here, the prose in ``RESULTS.md.j2``.

Every figure the template prints is computed from the run records (``results/*.json``) and the
preparation record (``prep.json``): means and spreads over seeds, per-seed paired differences,
noise bounds and the verdicts they support. The template only words them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sc_data.io import write_text
from sc_data.train.curriculum import SCHEDULES

if TYPE_CHECKING:
    from experiments.reproduce.run import ExperimentConfig, RunSpec

TEMPLATE = Path(__file__).with_name("RESULTS.md.j2")
GPU_RESULTS = TEMPLATE.parent / "gpu" / "results"
GPU_CONFIG = TEMPLATE.parent / "gpu" / "config.yaml"
SPLITS = ("eval", "ood")


def fmt(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` over seeds; the value alone for one seed; ``–`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def group_name(schedule: str, signal: str, budget: float) -> str:
    """A run group's label: the budget is the share of training pairs staged, not the share a run drew."""
    return f"{schedule} ({signal}, budget {round(budget * 100)} %)"


def seen_fractions(rs: list[dict[str, Any]]) -> list[float]:
    """Per run: distinct training pairs drawn at least once / training pairs staged."""
    return [r["pairs_seen"] / r["train_rows"] for r in rs]


def fmt_percent(values: list[float]) -> str:
    """``63 %``, or ``58–66 %`` when the seeds differ; ``⚠`` when some run left training pairs undrawn."""
    lo, hi = round(100 * min(values)), round(100 * max(values))
    return (f"{lo} %" if lo == hi else f"{lo}–{hi} %") + (" ⚠" if min(values) < 1.0 else "")


def groups_of(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped over seeds, in table order: full data by schedule, budget runs, other signals."""
    out: dict[str, list[dict[str, Any]]] = {}
    order = {"similarity": 0, "ref_margin": 1, "mean": 2}
    for r in sorted(results, key=lambda r: (r["budget"] < 1.0, order[r["signal"]] if r["budget"] == 1.0 else 0,
                                            SCHEDULES.index(r["schedule"]), r["seed"])):
        out.setdefault(group_name(r["schedule"], r["signal"], r["budget"]), []).append(r)
    return out


def paired(groups: dict[str, list[dict[str, Any]]], a: str, b: str, split: str) -> dict[int, float]:
    """Seed → accuracy of run group ``a`` minus that of group ``b`` on ``split``, over the seeds both have."""
    ra, rb = ({r["seed"]: r for r in groups.get(g, [])} for g in (a, b))
    return {k: ra[k][split]["accuracy"] - rb[k][split]["accuracy"] for k in sorted(ra.keys() & rb.keys())}


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


def verdict(diffs: np.ndarray, bound: float, ahead: str, behind: str) -> str:
    m = float(diffs.mean())
    return "within noise" if abs(m) <= bound else (ahead if m > 0 else behind)


def _judged(r: dict[str, Any]) -> list[float]:
    """The judge's XSTest over-refusal of one record, as a 0- or 1-element list (absent when not judged)."""
    v = r["xstest"].get("over_refusal_judge")
    return [] if v is None else [v]


def table_rows(groups: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    """One row of the results table per run group."""
    rows = []
    for name, rs in groups.items():
        tiers = sorted(rs[0]["eval_by_tier"])
        judged = [v for r in rs for v in _judged(r)]
        rows.append([
            name, str(len(rs)), str(rs[0]["steps"]), fmt_percent(seen_fractions(rs)),
            fmt([r["eval"]["accuracy"] for r in rs]), fmt([r["eval"]["margin_separation"] for r in rs], 2),
            fmt([r["ood"]["accuracy"] for r in rs]), fmt([r["ood"]["margin_separation"] for r in rs], 2),
            " / ".join(fmt([r["eval_by_tier"][t]["accuracy"] for r in rs if r["eval_by_tier"][t].get("accuracy") is not None], 2) for t in tiers),
            f"{fmt([r['xstest']['over_refusal'] for r in rs], 2)} / {fmt(judged, 2)}"
            + (f" ({len(judged)} of {len(rs)} judged)" if judged and len(judged) != len(rs) else ""),
            fmt([r["total_wall_s"] for r in rs], 0),
        ])
    return rows


def staged_vs_shuffled(results: list[dict[str, Any]], cfg: ExperimentConfig) -> list[list[float]]:
    """Per seed: staged_competence − shuffled (main signal, full data) on eval acc, eval margin, OOD acc, OOD margin, XSTest."""
    by = {(r["schedule"], r["signal"], r["budget"], r["seed"]): r for r in results}
    deltas = []
    for seed in cfg.seeds:
        a, b = by.get(("staged_competence", cfg.main_signal, 1.0, seed)), by.get(("shuffled", cfg.main_signal, 1.0, seed))
        if a and b:
            deltas.append([seed, *(a[s][k] - b[s][k] for s in SPLITS for k in ("accuracy", "margin_separation")),
                           a["xstest"]["over_refusal"] - b["xstest"]["over_refusal"],
                           (_judged(a)[0] - _judged(b)[0]) if _judged(a) and _judged(b) else None])
    return deltas


def vs_shuffled_rows(groups: dict[str, list[dict[str, Any]]], base: str) -> list[list[str]]:
    """Every run group minus full-data shuffled of the same seed: per-seed Δ accuracy, then the mean."""
    rows = []
    for name in groups:
        if name == base:
            continue
        cells = []
        for split in SPLITS:
            ds = paired(groups, name, base, split)
            cells.append(", ".join(f"s{k} {d:+.3f}" for k, d in sorted(ds.items()))
                         + (f" (mean {np.mean(list(ds.values())):+.3f})" if len(ds) > 1 else "") if ds else "–")
        rows.append([name, *cells])
    return rows


def _signal_reading(groups: dict[str, list[dict[str, Any]]], ses: dict[str, float]) -> dict[str, Any] | None:
    """Which difficulty signal gave the best staged_competence run, and whether it is beyond the noise."""
    names = {sig: group_name("staged_competence", sig, 1.0) for sig in ("similarity", "ref_margin", "mean")}
    signals = [sig for sig, name in names.items() if name in groups]
    if len(signals) < 2:
        return None

    def mean_acc(sig: str, split: str) -> float:
        return float(np.mean([r[split]["accuracy"] for r in groups[names[sig]]]))

    ranked = sorted(signals, key=lambda k: -(mean_acc(k, "eval") + mean_acc(k, "ood")))
    best, runner_up = ranked[0], ranked[1]
    diffs = {s: np.asarray(list(paired(groups, names[best], names[runner_up], s).values())) for s in SPLITS}
    bounds = {s: noise_bound(diffs[s], ses[s]) for s in SPLITS}
    return {
        "accuracies": [(sig, mean_acc(sig, "eval"), mean_acc(sig, "ood")) for sig in signals],
        "best": best, "runner_up": runner_up,
        "diff": {s: float(diffs[s].mean()) for s in SPLITS}, "bound": bounds,
        "ahead": any(diffs[s].mean() > bounds[s] for s in SPLITS) and not any(diffs[s].mean() < -bounds[s] for s in SPLITS),
    }


def _steady_signs(groups: dict[str, list[dict[str, Any]]], base: str, cfg: ExperimentConfig, ses: dict[str, float]) -> list[str]:
    """Run groups whose paired difference against shuffled has the same sign in every seed."""
    steady = []
    for name in groups:
        for split in SPLITS:
            d = np.asarray(list(paired(groups, name, base, split).values()))
            if name != base and len(d) == len(cfg.seeds) and (np.all(d > 0) or np.all(d < 0)):
                bound = noise_bound(d, ses[split])
                steady.append(f"{name} {'ahead' if d[0] > 0 else 'behind'} on {split} (mean {d.mean():+.3f}, ±{bound:.3f}: "
                              f"{verdict(d, bound, 'beyond the noise', 'beyond the noise')})")
    return steady


def reading(results: list[dict[str, Any]], deltas: list[list[float]], ses: dict[str, float], cfg: ExperimentConfig,
            pi0_xstest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts the "Reading" section words: each a number, a noise bound and the verdict they support."""
    groups = groups_of(results)
    main_sh, main_sc = group_name("shuffled", cfg.main_signal, 1.0), group_name("staged_competence", cfg.main_signal, 1.0)
    out: dict[str, Any] = {"se": ses, "pi0_xstest": pi0_xstest}
    shuffled = groups.get(main_sh, [])
    if shuffled:
        tiers = sorted(shuffled[0]["eval_by_tier"])
        accs = [float(np.mean([r["eval_by_tier"][t]["accuracy"] for r in shuffled])) for t in tiers]
        acc = float(np.mean([r["eval"]["accuracy"] for r in shuffled]))
        out["shuffled"] = {"accuracy": acc, "moved": acc - 0.5 > 2 * ses["eval"], "tier_accuracy": accs,
                           "falls": accs[0] > accs[-1] and all(a >= b for a, b in zip(accs, accs[1:], strict=False)),
                           "tier_n": [shuffled[0]["eval_by_tier"][t]["n"] for t in tiers]}
    out["staged_minus_shuffled"] = []
    if deltas:
        d = np.asarray([row[1:5] for row in deltas], dtype=np.float64)
        for col, what, split in ((d[:, 0], "eval accuracy", "eval"), (d[:, 2], "OOD accuracy", "ood")):
            bound = noise_bound(col, ses[split])
            out["staged_minus_shuffled"].append({
                "what": what, "mean": float(col.mean()), "n": len(col), "std": float(col.std(ddof=1)) if len(col) > 1 else None,
                "positive": int((col > 0).sum()), "bound": bound,
                "verdict": verdict(col, bound, "in favour of staged_competence", "against staged_competence"),
            })
    if main_sc in groups and main_sh in groups:
        m_sc, m_sh = (float(np.mean([r["eval"]["margin_separation"] for r in groups[g]])) for g in (main_sc, main_sh))
        out["margin"] = {"staged": m_sc, "shuffled": m_sh, "ratio": m_sc / m_sh if m_sh else math.nan}
    judged = [r for r in results if r["xstest"].get("over_refusal_judge") is not None]
    if judged:
        strings, by_judge = [r["xstest"]["over_refusal"] for r in judged], [r["xstest"]["over_refusal_judge"] for r in judged]
        out["xstest"] = {"n": len(judged), "strings": float(np.mean(strings)), "judge": float(np.mean(by_judge)),
                         "max_strings": max(strings), "max_judge": max(by_judge),
                         "judge_sees_less": float(np.mean(by_judge)) < 0.5 * float(np.mean(strings))}
    out["signal"] = _signal_reading(groups, ses)
    seeds_run = {r["seed"] for r in results}
    out["steady"] = _steady_signs(groups, main_sh, cfg, ses) if main_sh in groups and len(seeds_run) > 1 else None
    out["budget"] = []
    pct = round(cfg.stage.budget * 100)
    for schedule in ("shuffled", "staged_competence"):
        run = group_name(schedule, cfg.main_signal, cfg.stage.budget)
        if run in groups and main_sh in groups:
            cells = []
            for split in SPLITS:
                d = np.asarray(list(paired(groups, run, main_sh, split).values()))
                bound = noise_bound(d, ses[split])
                cells.append({"split": split, "mean": float(d.mean()), "bound": bound, "verdict": verdict(d, bound, "better", "worse")})
            out["budget"].append({"schedule": schedule, "cells": cells})
    out["budget_pct"] = pct
    out["seen"] = [(name, fmt_percent(seen_fractions(rs))) for name, rs in groups.items()]
    out["all_seen"] = [name for name, rs in groups.items() if min(seen_fractions(rs)) == 1.0]
    out["below"] = [name for name, rs in groups.items() if min(seen_fractions(rs)) < 1.0]
    out["n_eval"] = round(0.25 / ses["eval"] ** 2)
    out["small"] = len(seeds_run) < 3 or out["n_eval"] < 300
    for key in ("shuffled", "margin", "xstest"):
        out.setdefault(key, None)  # the template words only what was run
    return out


def plot(results: list[dict[str, Any]], out: Path, main_signal: str) -> list[str]:
    """Margin by step with stage boundaries per schedule; eval accuracy by tier per run group."""
    from matplotlib.figure import Figure

    from sc_data.stage.report import save_png

    first_seed = min(x["seed"] for x in results)
    main = sorted((r for r in results if r["signal"] == main_signal and r["budget"] == 1.0 and r["seed"] == first_seed),
                  key=lambda r: SCHEDULES.index(r["schedule"]))
    written = []
    if main:
        fig = Figure(figsize=(3.2 * len(main), 3.2), layout="constrained")
        axes = fig.subplots(1, len(main), sharey=True, squeeze=False)[0]
        for ax, r in zip(axes, main, strict=True):
            traj = r["trajectory"]
            ax.plot([m["step"] for m in traj], [m["margin"] for m in traj], marker=".")
            for a, b in zip(traj, traj[1:], strict=False):
                if b["stage"] != a["stage"]:
                    ax.axvline(a["step"] + 0.5, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(r["schedule"], fontsize=9)
            ax.set_xlabel("optimizer step")
        axes[0].set_ylabel("train batch reward margin\n(β·h vs current reference)")
        fig.suptitle(f"Training-batch margin by step (seed {first_seed}); dashed: stage ends", fontsize=9)
        save_png(fig, out / "margin_by_step.png")
        written.append("margin_by_step.png")
    groups = groups_of(results)
    if groups:
        names = list(groups)
        tiers = sorted({t for r in results for t in r["eval_by_tier"]})
        fig = Figure(figsize=(max(6, 1.2 * len(names)), 3.5), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / max(1, len(tiers))
        x = np.arange(len(names))
        for j, t in enumerate(tiers):
            means = [np.mean([r["eval_by_tier"][t].get("accuracy", np.nan) for r in groups[n]]) for n in names]
            ax.bar(x + j * width - 0.4 + width / 2, means, width, label=t)
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("eval accuracy vs π₀")
        ax.set_title("Held-out accuracy against π₀ by difficulty tier (0.5 = no change)", fontsize=9)
        ax.legend(fontsize=7, title="tier (main signal)", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save_png(fig, out / "accuracy_by_tier.png")
        written.append("accuracy_by_tier.png")
    return written


def gpu_cut() -> dict[str, Any]:
    """What ``gpu/config.yaml`` plans (declared there once, worded here): pairs, tiers, steps a run."""
    from experiments.reproduce import run

    cfg = run.experiment_config(GPU_CONFIG, [])
    tiers = run.planned_tier_sizes(cfg)
    steps = sorted({run.planned_coverage(cfg, r, run.planned_tier_sizes(cfg, r.budget))[0] for r in run.plan_runs(cfg)})
    return {"seeds": len(cfg.seeds), "pool": cfg.data.train_pool, "eval": cfg.data.train_pool - sum(tiers), "train": sum(tiers),
            "tiers": len(tiers), "epochs": f"{cfg.train.epochs_per_stage:g}", "steps": " or ".join(map(str, steps)),
            "batch": cfg.train.effective_batch}


def gpu_section(out: Path, gpu_results: Path = GPU_RESULTS) -> dict[str, Any] | None:
    """The GPU cut's plan and its table beside the CPU one: rows from ``gpu/results/*.json`` (none yet: "not run").

    Only the report at its home (``experiments/reproduce/RESULTS.md``) has it; the GPU sweep's
    own report, written elsewhere, does not point at itself.
    """
    if out.resolve() != TEMPLATE.parent:
        return None
    records = [json.loads(p.read_text("utf-8")) for p in sorted(gpu_results.glob("*.json"))]
    return {"n": len(records), "rows": table_rows(groups_of(records)) if records else [], "cut": gpu_cut()}


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


def _stage0_summary(results: list[dict[str, Any]]) -> str:
    """Where each run's stage-0 reference log-probs came from (trainer's run_info.json)."""
    sources: dict[str, int] = {}
    for r in results:
        src = (r.get("stage0_reference") or {}).get("source", "not recorded")
        sources[src] = sources.get(src, 0) + 1
    return ", ".join(f"{k} in {v} run(s)" for k, v in sorted(sources.items()))


def write_report(cfg: ExperimentConfig, info: dict[str, Any], results: list[dict[str, Any]], planned: list[RunSpec], out: Path,
                 command: str, notes: list[str] | None = None) -> Path:
    """Render ``RESULTS.md`` (and its plots) into ``out`` from the run records."""
    import jinja2

    from sc_data.train.evaluate import preference_metrics

    groups = groups_of(results)
    pi0 = info["pi0"]
    n = {s: len(pi0[s]["ids"]) for s in SPLITS}
    ses = {s: math.sqrt(0.25 / n[s]) for s in SPLITS}
    deltas = staged_vs_shuffled(results, cfg)

    class _Pi0:  # π₀ against itself: the reference-free figures are π₀'s own
        def __init__(self, split: str) -> None:
            self.chosen, self.rejected = pi0[split]["chosen"], pi0[split]["rejected"]

    pi0_free = {s: preference_metrics(_Pi0(s), _Pi0(s), tiers=np.full(n[s], -1), categories=[None] * n[s])["overall"]["reference_free_accuracy"]
                for s in SPLITS}
    delta_array = np.asarray([row[1:6] for row in deltas], dtype=np.float64) if deltas else np.zeros((0, 5))
    context = {
        "cfg": cfg, "info": info, "pi0": pi0, "pi0_free": pi0_free, "n": n, "se": ses,
        "seeds_run": sorted({r["seed"] for r in results}),
        "date": dt.date.today().isoformat(), "rows": table_rows(groups), "deltas": deltas,
        "full_steps": max((r["steps"] for r in results if r["budget"] == 1.0), default=0),
        "delta_mean": delta_array.mean(0).tolist() if len(deltas) > 1 else None,
        "delta_std": delta_array.std(0, ddof=1).tolist() if len(deltas) > 1 else None,
        "vs_shuffled": vs_shuffled_rows(groups, group_name("shuffled", cfg.main_signal, 1.0)),
        "missing": [r.name for r in planned if r.name not in {x["name"] for x in results}],
        "plots": plot(results, out, cfg.main_signal),
        "reading": reading(results, deltas, ses, cfg, pi0["xstest"]),
        "command": command, "notes": notes or [], "gpu": gpu_section(out),
        "config_json": json.dumps(cfg.model_dump(mode="json"), sort_keys=True),
        "timings": json.dumps(info["timings_s"]), "stage0": _stage0_summary(results),
        "versions": json.dumps(_versions()), "machine": _machine(), "now": dt.datetime.now().isoformat(timespec="minutes"),
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    path = out / "RESULTS.md"
    write_text(env.get_template(TEMPLATE.name).render(**context), path)
    return path
