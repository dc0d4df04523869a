"""End-to-end: the real ``sc-data`` console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sc_data(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sc-data", path=str(Path(sys.executable).parent)) or "sc-data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


class TestIngestCli:
    def test_examples_json(self, tmp_path: Path) -> None:
        out = tmp_path / "pairs.parquet"
        proc = sc_data("ingest", REPO / "examples" / "pairs.jsonl", "-o", out, "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert (result["rows_in"], result["rows_out"], result["rows_rejected"]) == (150, 130, 20)
        assert result["by_reason"] == {"safety_pair:safe/safe": 20}
        assert result["inputs"][0]["format"] == "pku-saferlhf"
        assert out.exists() and (tmp_path / "pairs.rejects.parquet").exists()

    def test_table_output_and_options(self, tmp_path: Path) -> None:
        proc = sc_data(
            "ingest", REPO / "tests" / "data" / "bad" / "trl_bad.jsonl", "-o", tmp_path / "p.parquet",
            "--dedup", "--rejects", tmp_path / "bad.parquet",
        )
        assert proc.returncode == 0, proc.stderr
        assert "total" in proc.stdout and "invalid_utf8" in proc.stdout and "duplicate" in proc.stdout
        assert (tmp_path / "bad.parquet").exists()

    def test_mapped_csv(self, tmp_path: Path) -> None:
        (tmp_path / "qa.csv").write_text("question,good,bad\nWhy?,Because.,Dunno.\n", "utf-8")
        proc = sc_data(
            "ingest", tmp_path / "qa.csv", "-o", tmp_path / "p.parquet", "--json",
            "--map", "prompt=question", "--map", "chosen=good", "--map", "rejected=bad",
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["rows_out"] == 1

    def test_missing_file_exits_1(self, tmp_path: Path) -> None:
        proc = sc_data("ingest", tmp_path / "missing.jsonl", "-o", tmp_path / "p.parquet")
        assert proc.returncode == 1
        assert "Error:" in proc.stderr and "missing.jsonl does not exist" in proc.stderr
        assert "Traceback" not in proc.stderr

    def test_bad_map_exits_1(self, tmp_path: Path) -> None:
        proc = sc_data("ingest", REPO / "examples" / "pairs.jsonl", "-o", tmp_path / "p.parquet", "--map", "prompt")
        assert proc.returncode == 1
        assert "is not of the form canonical=source" in proc.stderr

    @pytest.mark.parametrize("command", ["ingest", "inspect"])
    def test_help(self, command: str) -> None:
        proc = sc_data(command, "--help")
        assert proc.returncode == 0
        assert "Examples" in proc.stdout


class TestInspectCli:
    def test_inspect_json_and_table(self, tmp_path: Path) -> None:
        out = tmp_path / "pairs.parquet"
        assert sc_data("ingest", REPO / "examples" / "pairs.jsonl", "-o", out, "--safety-pairs", "keep").returncode == 0
        proc = sc_data("inspect", out, "--json")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["rows"] == 150
        assert summary["category"]["null"] == 20
        assert len(summary["categories"]) >= 6
        table = sc_data("inspect", out)
        assert table.returncode == 0 and "duplicate_ids" in table.stdout

    def test_inspect_missing_exits_1(self, tmp_path: Path) -> None:
        proc = sc_data("inspect", tmp_path / "nope.parquet")
        assert proc.returncode == 1 and "Error:" in proc.stderr
