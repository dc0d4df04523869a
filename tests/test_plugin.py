"""End-to-end: the example third-party scorer package (``examples/plugin/sc_data_overlap``) is
really installed with pip, found through the ``sc_data.scorers`` entry point by the real
``sc-data`` CLI, and its columns and declared difficulty drive ``score`` and ``stage``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT

PLUGIN = REPO_ROOT / "examples" / "plugin" / "sc_data_overlap"
EXAMPLES = REPO_ROOT / "examples" / "pairs.jsonl"


def _words(messages: list[dict[str, str]]) -> set[str]:
    return {w.lower() for m in messages for w in re.findall(r"\w+", m["content"])}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment whose PYTHONPATH holds the plugin, pip-installed into a private folder."""
    target = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_src") / "sc_data_overlap"
    shutil.copytree(PLUGIN, build)  # setuptools writes build/ and *.egg-info beside the sources
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(build)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(target.glob("sc_data_overlap-*.dist-info/entry_points.txt"))
    pythonpath = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def sc_data(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sc-data", path=str(Path(sys.executable).parent)) or "sc-data"
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"sc-data {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def scored(plugin_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/pairs.jsonl ingested and scored by the plugin through the CLI."""
    work = tmp_path_factory.mktemp("plugin_run")
    sc_data(plugin_env, "ingest", EXAMPLES, "-o", work / "pairs.parquet")
    sc_data(plugin_env, "score", work / "pairs.parquet", "--scorer", "overlap", "-o", work / "scored.parquet")
    return work / "scored.parquet"


class TestOverlapPlugin:
    def test_listed_by_the_cli(self, plugin_env: dict[str, str]) -> None:
        listed = {s["name"]: s for s in json.loads(sc_data(plugin_env, "scorers", "--json").stdout)}
        assert "ref_margin" in listed  # the built-ins stay beside it
        overlap = listed["overlap"]
        assert overlap["columns"] == {
            "overlap__error": "string",
            "overlap__jaccard": "double",
            "overlap__shared_words": "int64",
        }
        assert (overlap["difficulty_column"], overlap["direction"]) == ("overlap__jaccard", "larger_is_harder")
        assert overlap["needs_model"] is False

    def test_absent_without_the_install(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        listed = json.loads(sc_data(env, "scorers", "--json").stdout)
        assert "overlap" not in {s["name"] for s in listed}

    def test_scores_match_an_independent_jaccard(self, scored: Path) -> None:
        table = pq.read_table(scored)
        assert len(table) == 130
        chosen, rejected = table.column("chosen").to_pylist(), table.column("rejected").to_pylist()
        expected, shared = [], []
        for c, r in zip(chosen, rejected, strict=True):
            a, b = _words(c), _words(r)
            expected.append(len(a & b) / len(a | b))
            shared.append(len(a & b))
        got = np.asarray(table.column("overlap__jaccard").to_pylist(), dtype=np.float64)
        np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=0, atol=1e-12)
        assert table.column("overlap__shared_words").to_pylist() == shared
        assert table.column("overlap__error").null_count == len(table)
        assert 0 <= got.min() < got.max() <= 1  # the example pairs spread, so the tiers mean something

    def test_stage_ranks_by_the_declared_column(self, plugin_env: dict[str, str], scored: Path, tmp_path: Path) -> None:
        out = tmp_path / "staged"
        result = json.loads(sc_data(plugin_env, "stage", scored, "-o", out, "--tiers", "3", "--json").stdout)
        assert result["rows_in"] == 130 and result["rows_rejected"] == 0
        assert set(result["tiers"]) == {"tier_0", "tier_1", "tier_2"}
        manifest = json.loads((out / "sc_manifest.json").read_text("utf-8"))
        assert "overlap__jaccard" in json.dumps(manifest["recipe"])
        tiers = [pq.read_table(out / "data" / f"tier_{k}") for k in range(3)]
        jaccard = [np.asarray(t.column("overlap__jaccard").to_pylist()) for t in tiers]
        # larger_is_harder: the easiest tier holds the least overlapping pairs.
        assert jaccard[0].max() <= jaccard[1].min() and jaccard[1].max() <= jaccard[2].min()
        train = np.concatenate(jaccard)
        difficulty = np.concatenate([np.asarray(t.column("difficulty").to_pylist()) for t in tiers])
        order = np.argsort(train, kind="stable")
        assert np.all(np.diff(difficulty[order]) >= -1e-12)
