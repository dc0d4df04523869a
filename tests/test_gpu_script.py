"""bench/gpu/run.sh, the one device call that proves the GPU path, dry-run on the CPU so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).parents[1]
SCRIPT = REPO / "bench" / "gpu" / "run.sh"


def test_help_names_every_phase_and_its_budget() -> None:
    done = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    for phase, budget in (("cuda-tests", "90 s"), ("score", "150 s"), ("train-gc", "120 s"), ("train-nogc", "120 s"), ("summary", "10 s")):
        assert any(phase in line and budget in line for line in done.stdout.splitlines()), (phase, done.stdout)


def test_dry_run_writes_every_phase_and_the_summary(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": str(Path(os.sys.executable))}
    done = subprocess.run([str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    phases = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in phases] == ["cuda-tests", "score", "train-gc", "summary"]
    assert all(p["rc"] == 0 for p in phases), phases
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["score"]["pairs"] == 2 and summary["score"]["fast_tokens_per_s"] > 0
    trainers = {r["trainer"]: r for r in summary["train_checkpointing_on"]["results"]}
    assert {"sc_data", "trl"} <= set(trainers) and all(r["steps_per_s"][0] > 0 for r in trainers.values())
    assert "test_bf16_training_starts_each_stage_at_log2" in (tmp_path / "cuda-tests.txt").read_text()
    assert "| checkpointing on: trl |" in done.stdout
