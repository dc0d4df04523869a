"""README command 1's pipeline, run for real: the same script, checked output by output.

One demo run is shared by every test here (module-scoped fixture); it uses the real
SmolLM2-135M-Instruct from PyPI on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sc_data.stage.folder import verify
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo-out")
    env = {**os.environ, "SC_DATA_DEMO_OUT": str(out), "SC_DATA_DEMO_SKIP_SETUP": "1"}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "demo.sh")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_counts_add_up_from_raw_to_staged(demo: tuple[Path, str]) -> None:
    out, _ = demo
    ingest = json.loads((out / "scored.pairs.manifest.json").read_text())["counts"]
    assert ingest["rows_in"] == 150
    assert ingest["rows_in"] == ingest["rows_out"] + ingest["rows_rejected"]
    counts = json.loads((out / "scored.manifest.json").read_text())["counts"]
    assert counts["input"]["rows_in"] == counts["rows_out"] + counts["input"]["rows_rejected"] == 150
    scored = pq.read_table(out / "scored.parquet")
    assert scored.num_rows == ingest["rows_out"]
    for col in ("ref_margin__margin_mean", "judge__severity"):
        values = scored.column(col).to_pylist()
        assert all(v is not None for v in values), col
    assert scored.column("ref_margin__error").null_count == scored.num_rows
    assert set(scored.column("judge__method").to_pylist()) == {"probe"}


def test_probe_judge_separates_the_examples(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    report = json.loads((out / "probe" / "probe.json").read_text())["cross_validation"]["overall"]
    assert report["answers"] == 300 and report["auroc"] > 0.9  # held out by prompt; the examples are easy by design
    scored = pq.read_table(out / "scored.parquet").to_pydict()
    severity = scored["judge__severity"]
    assert sum(severity) / len(severity) > sum(scored["judge__chosen_severity"]) / len(severity)  # rejected look worse
    assert "probe judge" in stdout


def test_staged_dataset_verifies_with_three_tiers(demo: tuple[Path, str]) -> None:
    out, _ = demo
    report = verify(out / "staged")
    manifest = json.loads((out / "staged" / "sc_manifest.json").read_text())
    assert sorted(manifest["counts"]["by_tier"]) == ["tier_0", "tier_1", "tier_2"]
    assert report is not None
    plots = sorted(p.name for p in (out / "report").glob("*.png"))
    assert len(plots) == 4 and all((out / "report" / p).stat().st_size > 1000 for p in plots)


def test_training_has_metrics_for_every_stage(demo: tuple[Path, str]) -> None:
    out, _ = demo
    steps = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({s["stage"] for s in steps}) == [0, 1, 2]
    assert all(s["loss"] == s["loss"] for s in steps)  # no NaN
    assert (out / "run" / "final" / "adapter_model.safetensors").is_file()  # a LoRA run: final/ is the adapter


def test_stage0_reuses_scored_logprobs_and_margins_grow_within_stages(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    stage0 = json.loads((out / "run" / "run_info.json").read_text())["stage0_reference"]
    assert stage0["source"] == "stored", stage0  # scored and trained with the same model, template and truncation
    assert stage0["max_gap_nats"] <= stage0["tolerance_nats"] and stage0["checked_rows"] >= 32
    steps = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    for stage in (0, 1, 2):
        margins = [s["margin"] for s in steps if s["stage"] == stage]
        assert abs(margins[0]) < 1e-4  # each stage starts with policy = reference
        assert margins[-1] > margins[0] + 1e-3, (stage, margins)  # and learns within the stage
    assert "stage 0 reference log-probs: stored" in stdout
    assert (out / "run" / "margins_by_step.png").stat().st_size > 1000


def test_eval_and_summary_say_what_happened(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    result = json.loads((out / "eval.json").read_text())
    assert result["overall"]["before"]["accuracy"] == 0.5
    assert 0.0 <= result["overall"]["accuracy"] <= 1.0
    assert result["overall"]["n"] == json.loads((out / "staged" / "sc_manifest.json").read_text())["counts"]["by_split"]["test"]
    for needle in ("sc-data demo: done", "tier_0", "before training", "after training", str(out / "staged")):
        assert needle in stdout
