"""A missing optional dependency is one `Error:` line naming the extra that installs it, never a traceback.

Each case runs the real CLI in a fresh interpreter where the module cannot be imported
(``sys.modules[name] = None`` makes every import of it raise ModuleNotFoundError, as when it is
not installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import write_staged

RUN = "import sys; sys.modules[{name!r}] = None; sys.argv = ['sc-data', *sys.argv[1:]]; from sc_data.cli.main import app; app()"


def _pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "No.", "rejected": f"Yes {i}."}) + "\n" for i in range(3)))
    return path


@pytest.mark.parametrize(("module", "extra", "args"), [
    ("torch", "score", ["score", "{pairs}", "-o", "{out}/s.parquet", "-s", "ref_margin"]),
    ("openai", "judge", ["score", "{pairs}", "-o", "{out}/j.parquet", "-s", "judge", "--option", "judge.backend=openai",
                         "--option", "judge.base_url=http://127.0.0.1:9/v1", "--option", "judge.model=m"]),
    ("peft", "train", ["train", "{staged}", "-o", "{out}/run", "--lora", "--model", "{model}", "--device", "cpu"]),
    ("trl", "trl", ["train", "{staged}", "-o", "{out}/trl", "--engine", "trl", "--model", "{model}", "--device", "cpu"]),
])
def test_missing_extra_is_one_line(module: str, extra: str, args: list[str], tmp_path: Path, tiny_lm_dir: Path) -> None:
    values = {"pairs": _pairs(tmp_path), "out": tmp_path, "staged": write_staged(tmp_path / "staged"), "model": tiny_lm_dir}
    argv = [a.format(**values) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SC_DATA_DEBUG", None)
    run = subprocess.run([sys.executable, "-c", RUN.format(name=module), *argv], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert f"this needs '{module}', which is not installed: pip install \"sc-data[{extra}]\"" in " ".join(run.stderr.split()), run.stderr


def test_endpoint_judge_needs_no_torch(tmp_path: Path) -> None:
    """`[judge]` alone (no torch, transformers or sentence-transformers) scores with a served judge."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("torch", "transformers", "sentence_transformers", "accelerate", "peft"))
    run_cli = RUN.replace("sys.modules[{name!r}] = None", blocked)
    argv = ["score", str(_pairs(tmp_path)), "-o", str(tmp_path / "s.parquet"), "-s", "judge", "--option", "judge.backend=openai",
            "--option", "judge.base_url=http://127.0.0.1:9/v1", "--option", "judge.model=m", "--option", "judge.max_retries=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SC_DATA_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", run_cli, *argv], capture_output=True, text=True, timeout=300, env=env)
    # it gets as far as asking the (dead) endpoint about every row: no import of the model stack on the way
    assert run.returncode == 1 and "erred on 3 of 3 rows" in " ".join(run.stderr.split()), run.stderr[-2000:]
    assert "not installed" not in run.stderr and (tmp_path / "s.parquet").is_file()
