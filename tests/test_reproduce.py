"""Smoke test of experiments/reproduce/run.py: the whole sweep's plumbing on a tiny random model.

~40 synthetic pairs in the paper's release format, 1 seed, 1 epoch per stage, the
``ref_margin`` signal only (the similarity signal needs the real generator), a handful of OOD
pairs in raw HH-RLHF format and XSTest-style prompts. Checks that every planned run writes its
record, that a full-data run takes one epoch per stage and which schedules draw every pair, that the OOD overlap filter
drops exactly the planted duplicate, that a re-run skips finished runs, and the report.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments.reproduce import report
from experiments.reproduce import run as run_module
from experiments.reproduce.gpu.dry import synthetic_inputs
from sc_data.errors import ConfigError
from sc_data.train.curriculum import MULTI_STAGE

CONFIG = Path(run_module.__file__).with_name("config.yaml")


def _argv(root: Path, inputs: dict[str, Path], model: Path) -> list[str]:
    sets = {
        "seeds": "[0]", "score.model": str(model), "score.signals": "[ref_margin]", "main_signal": "ref_margin", "device": "cpu",
        "data.train_pool": 40, "data.ood_pairs": 5, "data.xstest_prompts": 3,
        "train.epochs_per_stage": 1, "train.effective_batch": 4, "train.micro_batch": 4, "train.lr": 1e-3,
        "train.max_length": 64, "train.max_prompt_length": 32, "eval.batch_size": 8, "eval.xstest_max_new_tokens": 4,
    }
    argv = ["--paper-data", str(inputs["paper"]), "--ood-data", str(inputs["ood"]), "--xstest", str(inputs["xstest"]),
            "--work", str(root / "work"), "--out", str(root / "out")]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


class TestReading:
    def test_verdict_uses_the_larger_of_pair_and_seed_noise(self):
        cfg = run_module.experiment_config(CONFIG, ["seeds=[0,1,2]"])
        ses = {"eval": 0.02, "ood": 0.02}  # 2·√2·se = 0.057
        steady = [[0, 0.10, 0, 0.10, 0, 0, None], [1, 0.11, 0, 0.09, 0, 0, None], [2, 0.09, 0, 0.11, 0, 0, None]]
        facts = report.reading([], steady, ses, cfg)["staged_minus_shuffled"]
        assert [(f["what"], round(f["mean"], 3), f["n"], f["positive"]) for f in facts] == [("eval accuracy", 0.1, 3, 3), ("OOD accuracy", 0.1, 3, 3)]
        assert [f["verdict"] for f in facts] == ["in favour of staged_competence"] * 2
        erratic = [[0, 0.30, 0, -0.20, 0, 0, None], [1, -0.10, 0, 0.40, 0, 0, None], [2, 0.10, 0, 0.10, 0, 0, None]]  # seed SE ≈ 0.23
        assert [f["verdict"] for f in report.reading([], erratic, ses, cfg)["staged_minus_shuffled"]] == ["within noise"] * 2

    def test_noise_bound(self):
        se = 0.05
        one = np.asarray([0.1])
        assert report.noise_bound(one, se) == pytest.approx(2 * math.sqrt(2) * se)
        d = np.asarray([0.1, 0.3, -0.1])
        sd = math.sqrt(sum((x - 0.1) ** 2 for x in d) / 2)
        t975_2dof = 4.302652729911275  # Student t quantile, from tables
        assert report.noise_bound(d, se) == pytest.approx(math.sqrt((2 * math.sqrt(2) * se) ** 2 + (t975_2dof * sd / math.sqrt(3)) ** 2))


class TestPlan:
    def test_runs_and_equal_steps(self):
        from sc_data.train.curriculum import build_stages

        cfg = run_module.experiment_config(CONFIG, [])
        names = [r.name for r in run_module.plan_runs(cfg)]
        assert len(names) == 9 * len(cfg.seeds) and len(set(names)) == len(names) and cfg.seeds == [0, 1, 2]
        tiers = [k for k in range(3) for _ in range(80)]
        for schedule in run_module.SCHEDULES:
            c = run_module.train_config(cfg, run_module.RunSpec(schedule, "similarity", 1.0, 0)).curriculum
            stages = build_stages(schedule, tiers=tiers, difficulty=list(range(240)), ids=[str(i) for i in range(240)],
                                  effective_batch=8, epochs_per_stage=c.epochs_per_stage, max_steps_per_stage=c.max_steps_per_stage)
            assert sum(s.steps for s in stages) == 30  # every schedule: one epoch of 240 pairs in batches of 8

    def test_unknown_run_name_is_refused(self, tmp_path):
        with pytest.raises(SystemExit, match=r"--only names no planned run: \['nope'\]; see --list"):
            run_module.main(["--work", str(tmp_path), "--only", "nope"])

    def test_bad_override_is_refused(self):
        with pytest.raises(ConfigError, match="invalid experiment config: main_signal 'ref_margin' must be one of score.signals"):
            run_module.experiment_config(None, ["main_signal=ref_margin", "score.signals=[similarity]"])
        with pytest.raises(ConfigError, match=r"invalid experiment config: train.lrr=0.1: Extra inputs are not permitted"):
            run_module.experiment_config(None, ["train.lrr=0.1"])


def test_sweep_end_to_end(tiny_lm_dir, tmp_path):
    inputs = synthetic_inputs(tmp_path)
    argv = _argv(tmp_path, inputs, tiny_lm_dir) + ["--note", "ran on a test machine"]
    assert run_module.main(argv) == 0

    prep = json.loads((tmp_path / "work" / "prep.json").read_text())
    assert prep["ood"]["ingested"] == 9 and prep["ood"]["dropped_overlap"] == 1 and prep["ood"]["used"] == 5
    assert prep["xstest"]["safe_total"] == 3 and prep["xstest"]["used"] == 3
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out" / "results").glob("*.json")}
    assert len(results) == 7  # 5 schedules + 2 budget runs; one signal, so no per-signal rows
    full = [r for r in results.values() if r["budget"] == 1.0]
    for r in full:  # one epoch per stage in batches of 4
        per_stage = r["tier_sizes"] if r["schedule"] in MULTI_STAGE else [r["train_rows"]]
        assert r["steps"] == sum(math.ceil(n / 4) for n in per_stage)
    seen = {r["schedule"]: r["pairs_seen"] / r["train_rows"] for r in full}
    assert seen["shuffled"] == seen["sequential"] == seen["curri_dpo"] == 1.0  # one epoch draws every pair
    assert seen["staged_competence"] < 1.0 and seen["sqrt_pacing"] < 1.0  # competence sampling, with replacement
    for r in full:  # the planned coverage replays the trainer's batches exactly
        spec = run_module.RunSpec(r["schedule"], r["signal"], r["budget"], r["seed"])
        assert run_module.planned_coverage(run_module.experiment_config(CONFIG, argv_sets(argv)), spec, r["tier_sizes"]) == (
            r["steps"], r["pairs_seen"] / r["train_rows"])
    assert {r["stages"] for r in full if r["schedule"] in MULTI_STAGE} == {3}
    for r in results.values():
        assert r["eval"]["n"] == prep["split"]["splits"]["eval"] and r["ood"]["n"] == 5
        assert 0.0 <= r["eval"]["accuracy"] <= 1.0 and r["xstest"]["n"] == 3
        assert len(r["trajectory"]) == r["steps"]
        assert r["xstest"]["judge_errors"] == 0 and 0.0 <= r["xstest"]["over_refusal_judge"] <= 1.0
        assert r["stage0_reference"]["source"] == "stored"  # the ref_margin scorer's log-probs, same model and template
    budget = [r for r in results.values() if r["budget"] < 1.0]
    assert all(r["train_rows"] < full[0]["train_rows"] for r in budget)

    report = (tmp_path / "out" / "RESULTS.md").read_text()
    sc, sh = ({r["schedule"]: r for r in full}[k] for k in ("staged_competence", "shuffled"))
    assert f"| shuffled (ref_margin, budget 100 %) | 1 | {sh['steps']} | 100 % |" in report
    assert f"{round(100 * sc['pairs_seen'] / sc['train_rows'])} % ⚠ |" in report and "**Below 100 %: " in report
    assert "Paired differences per seed" in report and "## On a GPU" not in report  # only the report at its home has it
    assert "XSTest over-refusal: strings / judge" in report and "- ran on a test machine" in report
    assert "Stage 0's reference log-probs: stored in 7 run(s)" in report
    by = {(r["schedule"], r["budget"]): r for r in results.values()}
    d_eval = by[("sequential", 1.0)]["eval"]["accuracy"] - by[("shuffled", 1.0)]["eval"]["accuracy"]
    d_ood = by[("sequential", 1.0)]["ood"]["accuracy"] - by[("shuffled", 1.0)]["ood"]["accuracy"]
    assert f"| sequential (ref_margin, budget 100 %) | s0 {d_eval:+.3f} | s0 {d_ood:+.3f} |" in report
    assert (tmp_path / "out" / "margin_by_step.png").stat().st_size > 0
    assert (tmp_path / "out" / "accuracy_by_tier.png").stat().st_size > 0

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "results").glob("*.json")}
    assert run_module.main(argv) == 0  # resumable: everything is done, nothing re-runs
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "results").glob("*.json")}


def argv_sets(argv: list[str]) -> list[str]:
    """The ``--set`` values of a run.py command line."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


GPU_SCRIPT = Path(run_module.__file__).parent / "gpu" / "run.sh"
GPU_CONFIG = GPU_SCRIPT.with_name("config.yaml")
PHASE_LINE = re.compile(r"^#\s+\d\. (\w+)\s+(\d+) s ")
DEVICE_LINE = re.compile(r"Phase total (\d+) s\. Device budget (\d+) s: start (\d+) s \+ call 1 (\d+) s \+ 2 x \(gap (\d+) s "
                         r"\+ transfer (\d+) s \+ (\d+) s\) \(call 2 and\s+# one retry\) \+ close (\d+) s = (\d+) s\.")
RUNS_LINE = re.compile(r"Runs estimate: ([\d.]+) s a step .*? x the config's steps \+ (\d+) s a run\s+# .*?\+ (\d+) s first-run "
                       r"warm-up, at most (\d+) % of the runs budget", re.S)


def gpu_help() -> tuple[str, dict[str, int]]:
    """``gpu/run.sh --help`` and the phase budgets it declares."""
    done = subprocess.run([str(GPU_SCRIPT), "--help"], capture_output=True, text=True, check=True)
    return done.stdout, {m[1]: int(m[2]) for line in done.stdout.splitlines() if (m := PHASE_LINE.match(line))}


class TestGpuCut:
    """experiments/reproduce/gpu: the device call's plan, and its dry run end to end."""

    def test_help_names_every_phase_and_the_budgets_fit_the_device(self):
        text, phases = gpu_help()
        assert list(phases) == ["setup", "coverage", "pi0", "runs", "report", "collect"]
        body = GPU_SCRIPT.read_text("utf-8")
        assert {m[1]: int(m[2]) for m in re.finditer(r"\bphase (\w+) (\d+) ", body)} == phases  # run as declared
        total = DEVICE_LINE.search(text)
        assert total, text
        phase_sum, device, start, call1, gap, transfer, per_call, close, planned = map(int, total.groups())
        assert sum(phases.values()) == phase_sum == per_call and transfer + per_call <= 600  # one call's limit
        assert start + call1 + 2 * (gap + transfer + per_call) + close == planned <= device == 900

    def test_runs_fit_their_budget_with_margin_at_the_stated_throughput(self):
        text, phases = gpu_help()
        stated = RUNS_LINE.search(text)
        assert stated, text
        per_step, per_run, warm_up, margin_pct = float(stated[1]), int(stated[2]), int(stated[3]), int(stated[4])
        cfg = run_module.experiment_config(GPU_CONFIG, [])
        runs = run_module.plan_runs(cfg)
        steps = sum(run_module.planned_coverage(cfg, r, run_module.planned_tier_sizes(cfg, r.budget))[0] for r in runs)
        estimate = per_step * steps + per_run * len(runs) + warm_up
        assert margin_pct <= 75 and estimate <= margin_pct / 100 * phases["runs"], (steps, estimate, phases["runs"])

    def test_gpu_config_draws_every_pair_in_every_run(self, tmp_path):
        cfg = run_module.experiment_config(GPU_CONFIG, [])
        runs = run_module.plan_runs(cfg)
        assert len(runs) == 15 and {r.schedule for r in runs} == set(run_module.SCHEDULES) and cfg.seeds == [0, 1, 2]
        train = cfg.data.train_pool - round(cfg.data.train_pool * cfg.stage.eval_fraction)
        assert sum(run_module.planned_tier_sizes(cfg)) == train
        done = subprocess.run([os.sys.executable, "-m", "experiments.reproduce.run", "--config", str(GPU_CONFIG),
                               "--work", str(tmp_path / "none"), "--coverage"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "planned tier sizes (no preparation yet)" in done.stderr and not (tmp_path / "none").exists()
        lines = [line.split("\t") for line in done.stdout.splitlines()]
        assert [n for n, _, _ in lines] == [r.name for r in runs]
        assert all(drawn == "100.0 % of pairs drawn" for _, _, drawn in lines), done.stdout

    def test_dry_run_end_to_end(self, tmp_path):
        env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": os.sys.executable}
        done = subprocess.run([str(GPU_SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=1500)
        assert done.returncode == 0, done.stderr[-3000:]
        out = tmp_path / "out"
        phases = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
        assert [(p["phase"], p["rc"]) for p in phases] == [(n, 0) for n in ("setup", "coverage", "pi0", "runs", "report", "collect")], phases
        assert sorted(p.name for p in out.iterdir()) == ["RESULTS.md", "dry-root", "phases.jsonl", "phases.log", "results.tar.gz"]
        results = [json.loads(p.read_text()) for p in sorted((out / "dry-root" / "out" / "results").glob("*.json"))]
        assert sorted(r["schedule"] for r in results) == sorted(run_module.SCHEDULES)
        assert all(r["pairs_seen"] == r["train_rows"] for r in results)  # every run drew every training pair
        report = (out / "RESULTS.md").read_text()
        for r in results:
            assert f"| {r['schedule']} (ref_margin, budget 100 %) | 1 | {r['steps']} | 100 % |" in report
        assert "Every run drew every training pair at least once." in report and "⚠" not in report
        import tarfile

        with tarfile.open(out / "results.tar.gz") as tar:
            names = set(tar.getnames())
        assert {"./RESULTS.md", "prep.json", *(f"./results/{r['name']}.json" for r in results)} <= names
        stamps = {p.name: p.stat().st_mtime_ns for p in (out / "dry-root" / "out" / "results").glob("*.json")}
        (out / "phases.jsonl").unlink()
        again = subprocess.run([str(GPU_SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=1500)
        assert again.returncode == 0, again.stderr[-3000:]  # a second call resumes: nothing re-runs
        assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "dry-root" / "out" / "results").glob("*.json")}


class TestGpuSection:
    def test_not_run_until_results_exist(self, tmp_path):
        home = Path(report.__file__).parent
        assert report.gpu_section(tmp_path) is None
        empty = report.gpu_section(home, tmp_path)
        assert (empty["n"], empty["rows"]) == (0, [])
        src = next((home / "results").glob("shuffled__*b100__s0.json"))
        (tmp_path / src.name).write_text(src.read_text())
        section = report.gpu_section(home, tmp_path)
        assert section["n"] == 1 and section["rows"][0][:4] == ["shuffled (similarity, budget 100 %)", "1", "30", "100 %"]

    def test_the_home_report_states_the_configs_cut(self):
        import jinja2

        cfg = run_module.experiment_config(GPU_CONFIG, [])
        cut = report.gpu_section(report.TEMPLATE.parent)["cut"]
        assert (cut["eval"], cut["train"]) == (round(cfg.data.train_pool * cfg.stage.eval_fraction), sum(run_module.planned_tier_sizes(cfg)))
        line = re.search(r"^The GPU cut.*$", report.TEMPLATE.read_text("utf-8"), re.M)[0]
        rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(line).render(gpu={"cut": cut})
        assert rendered in report.TEMPLATE.with_name("RESULTS.md").read_text("utf-8")  # RESULTS.md follows gpu/config.yaml
