"""Nothing lost, nothing destroyed: row faults stay row faults, file faults are one clear error.

The row corpus is tests/data/bad/row_faults.jsonl (its README lists each line); file faults are
built here from good files (truncated and corrupted gzip / zstd, empty files, splits, outputs).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sc_data.errors import ConfigError, InputError, ScDataError
from sc_data.ingest import ingest, ingest_tables

from .conftest import BAD_DIR, write_jsonl

ROW_FAULTS = BAD_DIR / "row_faults.jsonl"
# line -> (field, reason); see tests/data/bad/README.md
EXPECTED = {
    2: ("chosen", "invalid_unicode"),
    4: ("rejected", "nul_character"),
    6: ("id", "duplicate_id"),
    9: ("prompt", "wrong_type"),
}
KEPT = [1, 3, 5, 7, 8, 10]
SC_DATA = str(Path(sys.executable).with_name("sc-data"))


def _raw_lines() -> dict[int, dict]:
    text = ROW_FAULTS.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogatepass")
    return {i: json.loads(line) for i, line in enumerate(text.splitlines(), 1)}


class TestRowFaults:
    def test_each_fault_is_a_reject_and_good_rows_survive_exactly(self, tmp_path: Path) -> None:
        result = ingest([ROW_FAULTS], tmp_path / "out.parquet")
        rejects = pq.read_table(tmp_path / "out.rejects.parquet").to_pylist()
        assert {r["line"]: (r["field"], r["reason"]) for r in rejects} == EXPECTED
        assert result.rows_in == 10 == result.rows_out + result.rows_rejected
        pairs = pq.read_table(tmp_path / "out.parquet").to_pylist()
        raw = _raw_lines()
        by_id = {p["id"]: p for p in pairs}
        for line in (1, 3, 8):  # good string rows: every text exactly as in the file
            row = raw[line]
            got = by_id[row["id"]]
            assert got["prompt"] == [{"role": "user", "content": row["prompt"]}]
            assert got["chosen"] == [{"role": "assistant", "content": row["chosen"]}]
            assert got["rejected"] == [{"role": "assistant", "content": row["rejected"]}]
        assert by_id["e1"]["chosen"][0]["content"] == "Sure \U0001f600"
        assert by_id["c"]["prompt"] == raw[10]["prompt"] and by_id["c"]["rejected"] == raw[10]["rejected"]

    def test_hh_transcript_in_a_trl_file_is_read_per_row(self, tmp_path: Path) -> None:
        pairs, _ = ingest_tables([ROW_FAULTS])
        hh = [p for p in pairs.to_pylist() if p["chosen"][0]["content"].startswith("Mix flour")]
        assert len(hh) == 1
        assert hh[0]["prompt"] == [{"role": "user", "content": "How do I bake bread?"}]
        assert hh[0]["rejected"] == [{"role": "assistant", "content": "Buy it."}]

    def test_dedup_keeps_its_meaning_identical_content(self, tmp_path: Path) -> None:
        pairs, rejects = ingest_tables([ROW_FAULTS], dedup=True)
        reasons = {r["line"]: r["reason"] for r in rejects.to_pylist()}
        assert reasons[6] == "duplicate_id" and reasons[7] == "duplicate"
        assert pairs.num_rows == len(KEPT) - 1
        assert len(set(pairs.column("id").to_pylist())) == pairs.num_rows

    def test_duplicate_ids_across_inputs(self, tmp_path: Path) -> None:
        first = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "prompt": "p", "chosen": "yes", "rejected": "no"}])
        second = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "prompt": "p", "chosen": "other", "rejected": "no"}])
        pairs, rejects = ingest_tables([first, second])
        assert pairs.num_rows == 1 and [(r["source_file"], r["reason"]) for r in rejects.to_pylist()] == [(str(second), "duplicate_id")]

    def test_safety_pairs_flag_marks_a_column(self, shared_data: Path) -> None:
        pku = shared_data / "pku-saferlhf" / "alpaca7b_test_head.jsonl"
        flagged, _ = ingest_tables([pku], safety_pairs="flag")
        kept, _ = ingest_tables([pku], safety_pairs="keep")
        marks = flagged.column("safety_pair").to_pylist()
        assert "safety_pair" not in kept.column_names and flagged.num_rows == kept.num_rows == 339
        assert {m: marks.count(m) for m in set(marks)} == {None: 52, "safe/safe": 159, "unsafe/unsafe": 128}
        assert flagged.drop_columns(["safety_pair"]).equals(kept)


def _good_jsonl(n: int = 400) -> bytes:
    return "".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Safe answer {i}.", "rejected": f"Bad {i}."}) + "\n"
                   for i in range(n)).encode()


class TestFileFaults:
    @pytest.mark.parametrize("kind", ["truncated_gz", "corrupt_gz", "truncated_zst", "corrupt_zst"])
    def test_damaged_compression_is_one_error_naming_the_file(self, tmp_path: Path, kind: str) -> None:
        import zstandard

        data = _good_jsonl(20_000)
        packed = gzip.compress(data) if kind.endswith("gz") else zstandard.ZstdCompressor().compress(data)
        if kind.startswith("truncated"):
            packed = packed[: len(packed) // 2]
        else:
            damaged = bytearray(packed)
            damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\x00" * 64
            packed = bytes(damaged)
        path = tmp_path / ("pairs.jsonl.gz" if kind.endswith("gz") else "pairs.jsonl.zst")
        path.write_bytes(packed)
        with pytest.raises(InputError, match=rf"can't read {path}: the (gzip|zstd) stream is truncated or corrupt after record \d+"):
            ingest([path], tmp_path / "out.parquet")
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing half-written

    def test_empty_and_blank_files_are_errors(self, tmp_path: Path) -> None:
        for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n\n  \n")):
            path = tmp_path / name
            path.write_bytes(content)
            with pytest.raises(InputError, match=rf"{name} holds no record"):
                ingest([path], tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists()

    def test_no_usable_pair_is_an_error_that_keeps_the_rejects(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "q", "chosen": "same", "rejected": "same"}] * 3)
        with pytest.raises(InputError, match=r"no usable pair: all 3 record\(s\) were rejected \(identical_answers 3\)"):
            ingest([path], tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists()
        assert pq.read_table(tmp_path / "out.rejects.parquet").num_rows == 3
        manifest = json.loads((tmp_path / "out.manifest.json").read_text())  # lists the rejects: sc-data's to replace
        assert [f["path"] for f in manifest["files"]] == ["out.rejects.parquet"]
        assert (manifest["counts"]["rows_out"], manifest["counts"]["rows_rejected"]) == (0, 3)
        fixed = write_jsonl(tmp_path / "fixed.jsonl", [{"prompt": "q", "chosen": "no", "rejected": "yes"}])
        with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
            ingest([fixed], tmp_path / "out.parquet")
        assert ingest([fixed], tmp_path / "out.parquet", overwrite=True).rows_out == 1
        assert pq.read_table(tmp_path / "out.rejects.parquet").num_rows == 0
        with pytest.raises(InputError, match="no usable pair"):  # over a good run: its pairs go, as the manifest says
            ingest([path], tmp_path / "out.parquet", overwrite=True)
        assert not (tmp_path / "out.parquet").exists()
        assert ingest([fixed], tmp_path / "out.parquet", overwrite=True).rows_out == 1
        with pytest.raises(InputError, match="no usable pair"):  # in place: a failed run never deletes its input
            ingest([tmp_path / "out.parquet"], tmp_path / "out.parquet", overwrite=True, max_chars=1)
        assert pq.read_table(tmp_path / "out.parquet").num_rows == 1

    def test_bom_at_the_start_of_a_json_array(self, tmp_path: Path) -> None:
        path = tmp_path / "a.json"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"prompt": "p", "chosen": "y", "rejected": "n"}]).encode())
        assert ingest_tables([path])[0].num_rows == 1


class TestOutputs:
    def test_existing_output_needs_overwrite_and_must_be_ours(self, tmp_path: Path) -> None:
        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "y", "rejected": "n"}])
        out = tmp_path / "pairs.parquet"
        ingest([src], out)
        with pytest.raises(ConfigError, match=r"already exists; pass --overwrite"):
            ingest([src], out)
        ingest([src], out, overwrite=True)
        mine = tmp_path / "mine.parquet"
        mine.write_bytes(b"my own data")
        with pytest.raises(ConfigError, match=r"refusing to overwrite .*mine.parquet.*sc-data did not write it"):
            ingest([src], mine, overwrite=True)
        assert mine.read_bytes() == b"my own data"
        with pytest.raises(ConfigError, match=r"is a folder; pass a file path"):
            ingest([src], tmp_path, overwrite=True)
        manifest = tmp_path / "pairs.manifest.json"
        for files in (["pairs.parquet"], "pairs.parquet", None, {"path": "pairs.parquet"}):  # edited by hand: refused, not a traceback
            manifest.write_text(json.dumps({"sc_data_version": "0.1.0", "files": files}))
            with pytest.raises(ConfigError, match=r"refusing to overwrite .*sc-data did not write it"):
                ingest([src], out, overwrite=True)

    def test_rejects_must_be_another_file_than_the_output_and_its_manifest(self, tmp_path: Path) -> None:
        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "y", "rejected": "n"}, {"prompt": "q"}])
        out = tmp_path / "out.parquet"
        for rejects in (out, tmp_path / "out.manifest.json", tmp_path / "sub" / ".." / "out.parquet"):
            with pytest.raises(ConfigError, match=r"the outputs and their manifest must be different files"):
                ingest([src], out, rejects=rejects)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]

    def test_rejects_in_another_folder_are_listed_by_their_path(self, tmp_path: Path) -> None:
        """``--overwrite`` replaces a file elsewhere only if the manifest lists that path, not just a file of its name."""
        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "y", "rejected": "n"}, {"prompt": "q"}])
        out, mine = tmp_path / "out" / "pairs.parquet", tmp_path / "mine" / "pairs.rejects.parquet"
        out.parent.mkdir()
        mine.parent.mkdir()
        ingest([src], out)  # lists pairs.rejects.parquet, beside it
        mine.write_bytes(b"my own data")
        with pytest.raises(ConfigError, match=r"refusing to overwrite .*mine/pairs.rejects.parquet.*sc-data did not write it"):
            ingest([src], out, rejects=mine, overwrite=True)
        assert mine.read_bytes() == b"my own data"
        elsewhere = tmp_path / "other" / "rejects.parquet"
        elsewhere.parent.mkdir()
        ingest([src], out, rejects=elsewhere, overwrite=True)
        files = [f["path"] for f in json.loads((tmp_path / "out" / "pairs.manifest.json").read_text())["files"]]
        assert files == ["pairs.parquet", "../other/rejects.parquet"]
        assert ingest([src], out, rejects=elsewhere, overwrite=True).rows_rejected == 1  # sc-data's, by its path

    def test_a_manifest_that_fails_leaves_no_output(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The manifest is built before the outputs take their names: failing, it leaves nothing ``--overwrite`` would refuse."""
        from sc_data.ingest import pipeline
        from sc_data.io import sha256_file

        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "y", "rejected": "n"}, {"prompt": "q"}])
        out, rejects, manifest = tmp_path / "pairs.parquet", tmp_path / "pairs.rejects.parquet", tmp_path / "pairs.manifest.json"
        real = pipeline._manifest
        monkeypatch.setattr(pipeline, "_manifest", lambda *a, **k: {**real(*a, **k), "oops": object()})
        with pytest.raises(TypeError, match="a manifest can't hold object"):
            ingest([src], out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
        monkeypatch.setattr(pipeline, "_manifest", real)
        result = ingest([src], out)
        assert (result.rows_out, result.rows_rejected) == (1, 1)
        files = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
        assert files["pairs.parquet"]["sha256"] == sha256_file(out) and files["pairs.rejects.parquet"]["sha256"] == sha256_file(rejects)
        assert files["pairs.parquet"]["bytes"] == out.stat().st_size

    def test_cli_file_system_errors_are_one_line(self, tmp_path: Path) -> None:
        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "chosen": "y", "rejected": "n"}])
        (tmp_path / "afile").write_text("x")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cases = {
            "unwritable": ["ingest", str(src), "-o", str(tmp_path / "afile" / "out.parquet")],
            "missing": ["ingest", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.parquet")],
            "score_missing": ["score", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "s.parquet"), "-s", "ref_margin"],
        }
        for name, args in cases.items():
            run = subprocess.run([SC_DATA, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
            assert run.returncode == 1, (name, run.stderr)
            assert run.stderr.startswith("Error:") and "Traceback" not in run.stderr, (name, run.stderr)
            assert len(run.stderr.strip().splitlines()) <= 3, (name, run.stderr)  # one message, wrapped at most
        dot = subprocess.run([SC_DATA, "ingest", str(src), "-o", "."], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert dot.returncode == 2 and "'.' is a directory" in dot.stderr  # a usage error, caught by the parser
        run = subprocess.run([SC_DATA, *cases["unwritable"]], capture_output=True, text=True, timeout=120,
                             env={**env, "SC_DATA_DEBUG": "1"})
        assert run.returncode != 0 and "Traceback" in run.stderr


# ---------------------------------------------------------------------------- property
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ROLES = st.sampled_from(["user", "assistant", "system", "narrator"])
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES, "content": st.text(max_size=20)}), max_size=3)
ROWS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=20) | MESSAGES | JSON_VALUES,
        "chosen": st.text(max_size=20) | MESSAGES | JSON_VALUES,
        "rejected": st.text(max_size=20) | MESSAGES | JSON_VALUES,
        "id": st.text(max_size=4) | st.integers() | JSON_VALUES,
        "categories": st.lists(st.sampled_from(["privacy", "Violence", "nonsense"]), max_size=2) | JSON_VALUES,
    },
)
LINES = st.lists(st.one_of(ROWS.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40).filter(lambda b: b"\n" not in b)),
                 min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=LINES)
def test_random_rows_never_escape_and_always_add_up(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        pairs, rejects = ingest_tables([path], format="trl")
    except ScDataError:
        return  # a file-level verdict (nothing readable): one clear error is the contract
    # Blank lines are not records; a UTF-8 BOM opening the file is not part of its first line.
    records = sum(1 for k, line in enumerate(lines) if (line.removeprefix(b"\xef\xbb\xbf") if k == 0 else line).decode("utf-8", "replace").strip())
    assert pairs.num_rows + rejects.num_rows == records
