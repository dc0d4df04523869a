"""What a user gets from ``pip install sc-data`` and ``pip install "sc-data[judge]"``, in real venvs.

The core-only venv (tests/core_env.py) runs the real ``sc-data`` console script: every command that
needs an extra stops with one ``Error:`` line naming ``pip install "sc-data[<extra>]"`` (no
traceback), and the core commands (ingest, stage, verify, publish, pull) work end to end. The
``[judge]`` venv scores with a served judge on a loopback endpoint without torch. A partial install
(``[score]`` without peft, ``[train]`` without ``[trl]``) is the dev venv with those modules blocked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_data import api
from sc_data.cli._common import extra_modules
from tests.core_env import REPO, Venv, build_venv
from tests.hub.fake_hub import VALID_TOKEN, FakeHub
from tests.judge_server import JudgeEndpoint
from tests.train.conftest import write_staged

EXAMPLES = REPO / "examples" / "pairs.jsonl"
#: What a command says on stderr before it needs the extra (what it is about to do).
PREAMBLE = {"eval": ["Evaluating run on staged (eval)"], "judge": ["Fitting the probe judge on 1 input(s) with smollm2-135m-instruct (lm)"]}
MISSING = 'Error: this needs {module!r}, which is not installed: pip install "sc-data[{extra}]"'


@pytest.fixture(scope="session")
def core_venv() -> Venv:
    return build_venv()


@pytest.fixture(scope="session")
def judge_venv() -> Venv:
    return build_venv("judge")


def _pairs(folder: Path, n: int = 3) -> Path:
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "No.", "rejected": f"Yes {i}."}) + "\n" for i in range(n)))
    return path


def _scored(pairs: Path, out: Path) -> Path:
    """``pairs`` (an ingested Parquet) with a ``judge__severity`` column, as `score` would add it."""
    table = pq.read_table(pairs)
    table = table.append_column("judge__severity", pa.array([i % 4 for i in range(table.num_rows)], pa.int64()))
    pq.write_table(table, out)
    return out


def test_extras_name_importable_modules() -> None:
    """Every module the extras are read to install (pyproject's optional-dependencies) imports in the dev venv."""
    modules = extra_modules()
    assert {"score", "judge", "train", "trl", "hub", "bench", "dev", "all"} <= modules.keys()
    assert modules["judge"] == {"openai"} and {"torch", "peft"} <= modules["train"] and "trl" in modules["trl"]
    assert [m for m in sorted(modules["dev"]) if importlib.util.find_spec(m) is None] == []


class TestCoreOnly:
    """``pip install sc-data``: no torch, transformers, openai or datasets."""

    def test_it_is_core_only(self, core_venv: Venv, tmp_path: Path) -> None:
        for module in ("torch", "transformers", "openai", "datasets", "peft"):
            run = core_venv.run([str(core_venv.python), "-c", f"import {module}"], tmp_path)
            assert run.returncode == 1 and f"No module named '{module}'" in run.stderr, run.stderr

    @pytest.mark.parametrize(("extra", "module", "args"), [
        ("score", "torch", ["score", "{pairs}", "-o", "s.parquet", "-s", "ref_margin"]),
        ("score", "transformers", ["score", "{pairs}", "-o", "s.parquet", "-s", "judge"]),
        ("score", "transformers", ["score", "{pairs}", "-o", "s.parquet", "-s", "reward_gap", "--option", "reward_gap.model=m"]),
        ("judge", "openai", ["score", "{pairs}", "-o", "s.parquet", "-s", "judge", "--option", "judge.backend=openai",
                             "--option", "judge.base_url=http://127.0.0.1:9/v1", "--option", "judge.model=m"]),
        ("score", "torch", ["judge", "fit", "{pairs}", "-o", "probe", "--assume-chosen-safe"]),
        ("score", "sentence_transformers", ["decontaminate", "{parquet}", "-a", "{pairs}", "-o", "d.parquet", "--embedding"]),
        ("train", "torch", ["train", "staged", "-o", "run"]),
        ("trl", "torch", ["train", "staged", "-o", "run", "--engine", "trl"]),
        ("train", "torch", ["eval", "run", "--data", "staged"]),
        ("hub", "datasets", ["ingest", "some-org/some-set", "-o", "h.parquet"]),
    ])
    def test_missing_extra_is_one_error_line(self, core_venv: Venv, tmp_path: Path, extra: str, module: str, args: list[str]) -> None:
        (tmp_path / "run").mkdir()
        pairs = _pairs(tmp_path)
        parquet = api.ingest([pairs], tmp_path / "pairs.parquet").output if "{parquet}" in args else None
        argv = [a.format(pairs=pairs, parquet=parquet) for a in args]
        run = core_venv.run([str(core_venv.sc_data), *argv], tmp_path)
        assert run.returncode == 1, run.stderr
        lines = run.stderr.splitlines()
        assert lines == [*PREAMBLE.get(argv[0], []), MISSING.format(module=module, extra=extra)], run.stderr

    def test_core_commands_work_end_to_end(self, core_venv: Venv, tmp_path: Path) -> None:
        """ingest -> stage -> verify -> publish -> pull, with huggingface_hub (a core dependency) against a loopback Hub."""
        ingest = core_venv.run([str(core_venv.sc_data), "ingest", str(EXAMPLES), "-o", "pairs.parquet", "--json"], tmp_path)
        assert ingest.returncode == 0, ingest.stderr
        assert pq.read_metadata(tmp_path / "pairs.parquet").num_rows == 130  # 150 raw rows, 20 with two safe answers
        _scored(tmp_path / "pairs.parquet", tmp_path / "scored.parquet")
        stage = core_venv.run([str(core_venv.sc_data), "stage", "scored.parquet", "-o", "staged", "--json"], tmp_path)
        assert stage.returncode == 0, stage.stderr
        assert json.loads(stage.stdout)["rows_out"] == 130
        verify = core_venv.run([str(core_venv.sc_data), "verify", "staged"], tmp_path)
        assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout + verify.stderr

        hub = FakeHub().start()
        try:
            env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": VALID_TOKEN, "HF_HOME": str(tmp_path / "hf_home"),
                   "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
            publish = core_venv.run([str(core_venv.sc_data), "publish", "staged", "--repo", "sc-org/core", "--json"], tmp_path, **env)
            assert publish.returncode == 0, publish.stderr
            assert json.loads(publish.stdout)["commit_oid"] == hub.repo("sc-org/core").refs["main"]
            pull = core_venv.run([str(core_venv.sc_data), "pull", "sc-org/core", "-o", "pulled", "--json"], tmp_path, **env)
            assert pull.returncode == 0, pull.stderr
            assert json.loads(pull.stdout)["verified"] is True
        finally:
            hub.stop()
        staged = {p.relative_to(tmp_path / "staged") for p in (tmp_path / "staged").rglob("*") if p.is_file()}
        assert {p.relative_to(tmp_path / "pulled") for p in (tmp_path / "pulled").rglob("*") if p.is_file()} == staged


class TestJudgeOnly:
    """``pip install "sc-data[judge]"``: a served judge scores, and the result stages, without torch."""

    def test_endpoint_judge_scores_without_torch(self, judge_venv: Venv, tmp_path: Path) -> None:
        run = judge_venv.run([str(judge_venv.python), "-c", "import openai, importlib.util as u; assert u.find_spec('torch') is None"], tmp_path)
        assert run.returncode == 0, run.stderr
        server = JudgeEndpoint()
        try:
            argv = [str(judge_venv.sc_data), "score", str(_pairs(tmp_path, n=4)), "-o", "scored.parquet", "-s", "judge",
                    "--option", "judge.backend=openai", "--option", f"judge.base_url={server.url}",
                    "--option", "judge.model=judge-model", "--option", "judge.predict_category=false"]
            score = judge_venv.run(argv, tmp_path, SC_DATA_CACHE=str(tmp_path / "cache"), OPENAI_API_KEY="sk-loopback")
        finally:
            server.stop()
        assert score.returncode == 0, score.stderr
        # the loopback's top_logprobs {"2": .6, " 1": .3, "x": .1} -> p = (0, 1/3, 2/3, 0) over the labels
        severity = pq.read_table(tmp_path / "scored.parquet").column("judge__severity").to_pylist()
        assert severity == pytest.approx([1 / 3 + 2 * 2 / 3] * 4, abs=1e-12)
        assert len(server.requests) == 8  # rejected and chosen answer of each pair
        stage = judge_venv.run([str(judge_venv.sc_data), "stage", "scored.parquet", "-o", "staged", "-k", "2", "--eval-fraction", "0"], tmp_path)
        assert stage.returncode == 0, stage.stderr


class TestPartialInstall:
    """A command names its own extra when a lower one is installed: ``sys.modules[m] = None`` makes ``import m`` fail as if absent."""

    RUN = "import sys; {blocked}; sys.argv = ['sc-data', *sys.argv[1:]]; from sc_data.cli.main import app; app()"

    @pytest.mark.parametrize(("blocked", "extra", "args"), [
        (("peft",), "train", ["--lora"]),  # [score] installed
        (("datasets", "trl"), "trl", ["--engine", "trl"]),  # [train] installed: trl's engine imports datasets first
    ])
    def test_train_names_its_extra(self, blocked: tuple[str, ...], extra: str, args: list[str], tmp_path: Path, tiny_lm_dir: Path) -> None:
        code = self.RUN.format(blocked="; ".join(f"sys.modules[{m!r}] = None" for m in blocked))
        argv = ["train", str(write_staged(tmp_path / "staged")), "-o", str(tmp_path / "run"), "--model", str(tiny_lm_dir), "--device", "cpu", *args]
        env = {k: v for k, v in os.environ.items() if k != "SC_DATA_DEBUG"} | {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
        run = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert MISSING.format(module=blocked[0], extra=extra) in run.stderr.splitlines(), run.stderr
