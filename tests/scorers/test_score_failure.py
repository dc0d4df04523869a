"""A score run that fails on every row is a failure: it exits non-zero, after writing what it has."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sc_data.errors import ConfigError, ScorerFailure
from sc_data.scorers.runner import score

SC_DATA = shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))
#: Nothing listens on the discard port: every request fails at once.
DEAD = ["judge.backend=openai", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=guard", "judge.max_retries=0", "judge.timeout_s=2"]


def _pairs(path: Path, n: int = 6) -> Path:
    rows = [{"prompt": f"How do I do thing {i}?", "chosen": "I can't help.", "rejected": f"Sure, step {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_unreachable_judge_exits_non_zero_after_writing(tmp_path: Path) -> None:
    src = _pairs(tmp_path / "raw.jsonl")
    out = tmp_path / "scored.parquet"
    args = [SC_DATA, "score", str(src), "-o", str(out), "-s", "judge", *[x for o in DEAD for x in ("--option", o)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SC_DATA_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert run.stderr.startswith("Error:") and "Traceback" not in run.stderr
    assert "scorer 'judge' erred on 6 of 6 rows" in run.stderr and "first error:" in run.stderr
    assert out.is_file() and (tmp_path / "scored.manifest.json").is_file()  # written before failing


def test_error_budget(tmp_path: Path) -> None:
    src = _pairs(tmp_path / "raw.jsonl")
    options = {"judge": dict(o.removeprefix("judge.").split("=", 1) for o in DEAD)}
    with pytest.raises(ScorerFailure, match=r"allowed share: 0\.5"):
        score(src, tmp_path / "a.parquet", scorers=["judge"], options=options, max_error_rate=0.5)
    with pytest.raises(ConfigError, match="max_error_rate must be in"):
        score(src, tmp_path / "b.parquet", scorers=["judge"], options=options, max_error_rate=1.0)
