"""`sc-data score` on raw preference sets: ingested on the way in, counts chained, resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq

from sc_data.scorers.runner import pairs_path, parts_dir, score
from tests.scorers.test_score_runner import SC_DATA, LengthScorer, _env

REPO = Path(__file__).resolve().parents[2]


def _chained(scored: Path) -> dict:
    manifest = json.loads(scored.with_name(f"{scored.stem}.manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input"]["rows_in"] == counts["rows_out"] + counts["input"]["rows_rejected"]  # raw rows = scored + rejected
    assert counts["rows_out"] == pq.read_table(scored).num_rows
    rejects = pairs_path(scored).with_name(f"{pairs_path(scored).stem}.rejects.parquet")
    assert pq.read_table(rejects).num_rows == counts["input"]["rows_rejected"]
    return counts


def test_cli_scores_raw_hh_rlhf_and_pku_files(shared_data: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    hh, pku = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", shared_data / "pku-saferlhf" / "alpaca7b_test_head.jsonl"
    out = tmp_path / "scored.parquet"
    args = ["-s", "ref_margin", "--model", str(tiny_lm_dir), "--option", "ref_margin.device=cpu",
            "--option", "ref_margin.max_length=48", "--option", "ref_margin.max_prompt_length=24", "--part-rows", "512"]
    run = subprocess.run([SC_DATA, "score", str(hh), str(pku), "-o", str(out), *args, "--safety-pairs", "flag", "--json"],
                         capture_output=True, text=True, env=_env(), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["pairs"] == str(pairs_path(out)) and summary["errors"] == {"ref_margin": 0}
    counts = _chained(out)
    assert counts["input"]["rows_in"] == 2312 + 339
    scored = pq.read_table(out)
    assert {"safety_pair", "ref_margin__margin_mean"} <= set(scored.column_names)  # the ingest option reached ingest
    assert scored.column("ref_margin__margin_mean").null_count == 0
    again = subprocess.run([SC_DATA, "score", str(pku), "-o", str(out), *args], capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from sc_data.scorers.runner import score
    from tests.scorers.test_score_runner import LengthScorer

    class Slow(LengthScorer):
        def score(self, batch):
            time.sleep(0.2)
            return super().score(batch)

    score(sys.argv[1], sys.argv[2], scorers=[Slow()], part_rows=40, resume=sys.argv[3] == "resume")
    """
)


def test_raw_input_resume_after_sigkill_equals_uninterrupted_run(shared_data: Path, tmp_path: Path) -> None:
    pku = shared_data / "pku-saferlhf" / "alpaca7b_test_head.jsonl"
    out = tmp_path / "scored.parquet"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SCRIPT, str(pku), str(out), "fresh"], env=_env(), cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts_dir(out).glob("part-*.parquet")) if parts_dir(out).exists() else []) < 1:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert pairs_path(out).is_file() and not out.exists()  # ingested, then killed while scoring
    pairs_mtime = pairs_path(out).stat().st_mtime_ns
    resumed = subprocess.run([sys.executable, "-c", SLOW_SCRIPT, str(pku), str(out), "resume"], env=_env(), cwd=REPO, timeout=300)
    assert resumed.returncode == 0
    assert pairs_path(out).stat().st_mtime_ns == pairs_mtime  # the resume kept the ingested pairs
    reference = tmp_path / "reference.parquet"
    score(pku, reference, scorers=[LengthScorer()], part_rows=40)
    assert pq.read_table(out).equals(pq.read_table(reference))
    assert _chained(out)["input"]["rows_in"] == 339
