"""The score runner: wiring checks, error isolation, manifest, resume after SIGKILL, torchrun, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pyarrow.parquet as pq
import pytest

from sc_data.errors import ConfigError
from sc_data.io import sha256_file, write_json, write_parquet
from sc_data.schema import load_json_schema
from sc_data.scorers.base import Scorer
from sc_data.scorers.runner import length_order, parts_dir, score
from tests.scorers.conftest import make_pairs

REPO = Path(__file__).resolve().parents[2]
SC_DATA = str(Path(sys.executable).parent / "sc-data")  # the installed console script


class LengthScorer(Scorer):
    """Test scorer: rejected answer length; raises on the rows whose id is in ``fail_ids``."""

    name: ClassVar[str] = "length"
    fields: ClassVar[dict[str, str]] = {"chars": "float64"}
    difficulty_field: ClassVar[str] = "chars"
    direction: ClassVar[str] = "larger_is_harder"
    needs_model: ClassVar[bool] = False

    def __init__(self, *, fail_ids: tuple[str, ...] = ()) -> None:
        self.fail_ids = fail_ids

    def score(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        bad = [i for i in batch["id"] if i in self.fail_ids]
        if bad:
            raise RuntimeError(f"cannot score {bad[0]}")
        return {"length__chars": [float(len(r[-1]["content"])) for r in batch["rejected"]]}


def _chars(batch: dict[str, list[Any]], i: int) -> int:
    return sum(len(m["content"]) for k in ("prompt", "chosen", "rejected") for m in batch[k][i])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([SC_DATA, *args], capture_output=True, text=True, env=_env(), timeout=300, **kw)


class TestWiring:
    def test_unknown_scorer(self, pairs_file: Path, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"unknown scorer 'nope'; valid scorers: \[.*'ref_margin'"):
            score(pairs_file, tmp_path / "o.parquet", scorers=["nope"])

    def test_unknown_option(self, pairs_file: Path, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"unknown option\(s\) \['bogus'\] for scorer 'ref_margin'; valid options: \['attn_implementation', 'batch_tokens'"):
            score(pairs_file, tmp_path / "o.parquet", scorers=["ref_margin"], options={"ref_margin": {"bogus": 1}})

    def test_options_for_scorer_not_run(self, pairs_file: Path, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"options given for scorer\(s\) \['judge'\] that are not being run"):
            score(pairs_file, tmp_path / "o.parquet", scorers=[LengthScorer()], options={"judge": {"x": 1}})

    def test_column_clash_with_input(self, tmp_path: Path) -> None:
        first = tmp_path / "first.parquet"
        score(self._pairs(tmp_path), first, scorers=[LengthScorer()])
        with pytest.raises(ConfigError, match=r"already has column\(s\) \['length__chars', 'length__error'\]"):
            score(first, tmp_path / "again.parquet", scorers=[LengthScorer()])

    def test_missing_input(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match=r"input file .*none.parquet does not exist; check the path"):
            score(tmp_path / "none.parquet", tmp_path / "o.parquet", scorers=[LengthScorer()])

    @staticmethod
    def _pairs(tmp_path: Path, n: int = 12) -> Path:
        path = tmp_path / "pairs.parquet"
        write_parquet(make_pairs(n), path)
        return path


class TestRun:
    def test_error_isolation_and_manifest(self, tmp_path: Path) -> None:
        table = make_pairs(10)
        src = tmp_path / "pairs.parquet"
        write_parquet(table, src)
        write_json({"licenses": ["CC-BY-NC-4.0"], "counts": {"rows_in": 11, "rows_out": 10, "rows_rejected": 1}}, tmp_path / "pairs.manifest.json")
        bad = table.column("id")[3].as_py()
        out = tmp_path / "scored.parquet"
        seen: list[tuple[int, int]] = []
        result = score(src, out, scorers=[LengthScorer(fail_ids=(bad,))], part_rows=4, progress=lambda d, t: seen.append((d, t)))
        scored = pq.read_table(out)
        assert scored.column_names[: len(table.column_names)] == table.column_names
        assert scored.select(table.column_names).to_pylist() == table.to_pylist()  # input untouched
        assert scored.schema.field("id").nullable is False  # canonical schema kept
        chars = scored.column("length__chars").to_pylist()
        errors = scored.column("length__error").to_pylist()
        assert chars[3] is None and errors[3] == f"RuntimeError: cannot score {bad}"
        assert all(e is None for i, e in enumerate(errors) if i != 3)
        expected = [float(len(r[-1]["content"])) for r in table.column("rejected").to_pylist()]
        assert [c for i, c in enumerate(chars) if i != 3] == [c for i, c in enumerate(expected) if i != 3]
        assert result.errors == {"length": 1} and seen[-1] == (10, 10)
        manifest = json.loads((tmp_path / "scored.manifest.json").read_text())
        jsonschema.validate(manifest, load_json_schema("manifest"))
        assert manifest["kind"] == "scored" and manifest["licenses"] == ["CC-BY-NC-4.0"]
        assert manifest["counts"]["rows_in"] == manifest["counts"]["rows_out"] == 10
        assert manifest["counts"]["input"]["rows_rejected"] == 1
        assert manifest["scorers"]["length"]["difficulty_column"] == "length__chars"
        assert not parts_dir(out).exists()

    def test_a_manifest_that_fails_leaves_no_output_and_the_parts_to_resume(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The manifest is built before the output takes its name; failing, it leaves no output and keeps the scored parts."""
        from sc_data.scorers import runner

        src = tmp_path / "pairs.parquet"
        write_parquet(make_pairs(6), src)
        out = tmp_path / "scored.parquet"
        real = runner._manifest
        monkeypatch.setattr(runner, "_manifest", lambda *a, **k: {**real(*a, **k), "oops": object()})
        with pytest.raises(TypeError, match="a manifest can't hold object"):
            score(src, out, scorers=[LengthScorer()], part_rows=4)
        assert not out.exists() and not (tmp_path / "scored.manifest.json").exists()
        assert sorted(p.name for p in parts_dir(out).glob("*.parquet"))  # what was scored is kept for a resume
        monkeypatch.setattr(runner, "_manifest", real)
        score(src, out, scorers=[LengthScorer()], part_rows=4, resume=True)
        manifest = json.loads((tmp_path / "scored.manifest.json").read_text())
        assert manifest["files"][0]["sha256"] == sha256_file(out)

    def test_a_parts_folder_sc_data_did_not_write_is_left_alone(self, tmp_path: Path) -> None:
        src = tmp_path / "pairs.parquet"
        write_parquet(make_pairs(6), src)
        out = tmp_path / "scored.parquet"
        parts_dir(out).mkdir()
        (parts_dir(out) / "thesis.txt").write_text("mine")
        for resume in (False, True):
            with pytest.raises(ConfigError, match=r"refusing to remove .*scored.parquet.parts.*it has no state.json"):
                score(src, out, scorers=[LengthScorer()], part_rows=4, resume=resume)
        assert (parts_dir(out) / "thesis.txt").read_text() == "mine" and not out.exists()
        (parts_dir(out) / "thesis.txt").unlink()  # an empty folder (a run killed before its state file) is free
        assert score(src, out, scorers=[LengthScorer()], part_rows=4).rows == 6 and not parts_dir(out).exists()

    def test_an_option_json_cannot_hold_is_refused_before_scoring(self, tmp_path: Path) -> None:
        src = tmp_path / "pairs.parquet"
        write_parquet(make_pairs(6), src)
        out = tmp_path / "scored.parquet"
        with pytest.raises(ConfigError, match=r"scorer options must be JSON values .*a manifest can't hold object"):
            score(src, out, scorers=[LengthScorer(fail_ids=(object(),))], part_rows=4)
        assert not out.exists() and not parts_dir(out).exists()

    def test_parts_follow_length_order_and_merge_back_to_input_order(self, tmp_path: Path) -> None:
        table = make_pairs(11)
        src = tmp_path / "pairs.parquet"
        write_parquet(table, src)
        calls: list[list[int]] = []

        class Recording(LengthScorer):
            def score(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
                calls.append([_chars(batch, i) for i in range(len(batch["id"]))])
                return super().score(batch)

        out = tmp_path / "scored.parquet"
        score(src, out, scorers=[Recording()], part_rows=3)
        rows = table.to_pylist()
        by_row = [sum(len(m["content"]) for k in ("prompt", "chosen", "rejected") for m in r[k]) for r in rows]
        expected = sorted(range(len(rows)), key=lambda i: by_row[i])  # stable: ties in input order
        assert expected != sorted(expected)  # the fixture is not already in length order
        assert [len(c) for c in calls] == [3, 3, 3, 2]
        assert [x for c in calls for x in c] == [by_row[i] for i in expected]  # each call a run of the length order
        assert length_order(table).tolist() == expected
        scored = pq.read_table(out)
        assert scored.select(table.column_names).to_pylist() == rows
        assert scored.column("length__chars").to_pylist() == [float(len(r["rejected"][-1]["content"])) for r in rows]

    def test_ref_margin_config_file_and_resume_refused(self, tmp_path: Path, tiny_lm_dir: Path) -> None:
        src = TestWiring._pairs(tmp_path, 6)
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(f"scorers:\n  ref_margin:\n    model: {tiny_lm_dir}\n    max_length: 64\n    max_prompt_length: 32\n    device: cpu\n")
        out = tmp_path / "scored.parquet"
        score(src, out, scorers=[], config_file=cfg, part_rows=4)
        manifest = json.loads((tmp_path / "scored.manifest.json").read_text())
        rm = manifest["scorers"]["ref_margin"]
        assert rm["max_length"] == 64 and rm["template"]["truncation"]["max_length"] == 64
        assert rm["model_ref"]["sha256"] and rm["torch_dtype"] == "float32"
        # A leftover parts folder from a run with other options must not be resumed.
        folder = parts_dir(out)
        folder.mkdir()
        write_json({"config_hash": "0" * 64}, folder / "state.json")
        with pytest.raises(ConfigError, match=r"can't resume: the parts in .* were written with a different configuration"):
            score(src, out, scorers=["ref_margin"], options={"ref_margin": {"model": str(tiny_lm_dir)}}, resume=True, overwrite=True)


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from sc_data.scorers.runner import score
    from tests.scorers.test_score_runner import LengthScorer

    class Slow(LengthScorer):
        def score(self, batch):
            time.sleep(0.3)
            return super().score(batch)

    score(sys.argv[1], sys.argv[2], scorers=[Slow()], part_rows=2, resume=sys.argv[3] == "resume")
    """
)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    src = TestWiring._pairs(tmp_path, 16)
    out = tmp_path / "scored.parquet"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SCRIPT, str(src), str(out), "fresh"], env=_env(), cwd=REPO)
    deadline = time.monotonic() + 120
    parts: list[Path] = []
    while time.monotonic() < deadline and len(parts) < 2:
        parts = list(parts_dir(out).glob("part-*.parquet")) if parts_dir(out).exists() else []
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in parts_dir(out).glob("part-*.parquet"))
    assert 2 <= len(done) < 8 and not out.exists()  # really interrupted half-way
    resumed = subprocess.run([sys.executable, "-c", SLOW_SCRIPT, str(src), str(out), "resume"], env=_env(), cwd=REPO, timeout=120)
    assert resumed.returncode == 0
    reference = tmp_path / "reference.parquet"
    score(src, reference, scorers=[LengthScorer()], part_rows=2)
    assert pq.read_table(out).equals(pq.read_table(reference))


class TestCli:
    def test_score_cli_and_torchrun_two_processes(self, tmp_path: Path, tiny_lm_dir: Path) -> None:
        src = TestWiring._pairs(tmp_path, 9)
        single = tmp_path / "single.parquet"
        args = ["-s", "ref_margin", "--model", str(tiny_lm_dir), "--option", "ref_margin.device=cpu", "--part-rows", "2"]
        run = _cli("score", str(src), "-o", str(single), *args, "--json")
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["rows"] == 9 and summary["errors"] == {"ref_margin": 0} and summary["world_size"] == 1
        double = tmp_path / "double.parquet"
        dist = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
             SC_DATA, "score", str(src), "-o", str(double), *args, "--json"],
            capture_output=True, text=True, env=_env(), timeout=300,
        )
        assert dist.returncode == 0, dist.stderr[-3000:]
        assert json.loads(dist.stdout)["world_size"] == 2
        a, b = pq.read_table(single), pq.read_table(double)
        assert a.column_names == b.column_names
        for col in a.column_names:
            if col.startswith("ref_margin__") and a.schema.field(col).type.equals(b.schema.field(col).type) and str(a.schema.field(col).type) == "double":
                assert a.column(col).to_pylist() == pytest.approx(b.column(col).to_pylist(), abs=1e-5)
            else:
                assert a.column(col).equals(b.column(col))
        manifest = json.loads((tmp_path / "double.manifest.json").read_text())
        assert manifest["recipe"]["world_size"] == 2

    def test_cli_errors_and_scorers_listing(self, pairs_file: Path, tmp_path: Path) -> None:
        bad = _cli("score", str(pairs_file), "-o", str(tmp_path / "o.parquet"), "-s", "ref_margin", "--option", "ref_margin.oops=1")
        assert bad.returncode == 1 and "Error: unknown option(s) ['oops'] for scorer 'ref_margin'" in bad.stderr
        malformed = _cli("score", str(pairs_file), "-o", str(tmp_path / "o.parquet"), "-s", "ref_margin", "--option", "max_length")
        assert malformed.returncode == 1 and "must look like SCORER.KEY=VALUE" in malformed.stderr
        listing = _cli("scorers", "--json")
        assert listing.returncode == 0, listing.stderr
        rm = {s["name"]: s for s in json.loads(listing.stdout)}["ref_margin"]
        assert rm["difficulty_column"] == "ref_margin__margin_mean" and rm["direction"] == "larger_is_easier"
        assert rm["options"]["model"] == "smollm2-135m-instruct" and "ref_margin__flags" in rm["columns"]
        assert _cli("score", "--help").returncode == 0
        text = subprocess.run([SC_DATA, "scorers"], capture_output=True, text=True, env={**_env(), "COLUMNS": "80"}).stdout
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80  # readable in an 80-column terminal, nothing cut
        assert "ref_margin  difficulty: ref_margin__margin_mean (larger is easier)" in text and "ref_margin__flags" in text
