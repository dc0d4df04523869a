"""The bad-input corpus (tests/data/bad): every bad line becomes a reject with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sc_data.errors import ConfigError, InputError
from sc_data.ingest import ingest, ingest_tables, make_options, parse_column_map
from sc_data.ingest.arrow import RAW_LIMIT
from sc_data.schema import REJECT_SCHEMA

from .conftest import write_jsonl

# line -> (field, reason); see tests/data/bad/README.md
EXPECTED = {
    2: (None, "invalid_json"),
    3: ("rejected", "missing_field"),
    4: ("chosen", "empty_text"),
    5: ("rejected", "empty_text"),
    6: ("rejected", "identical_answers"),
    7: ("chosen", "wrong_type"),
    8: (None, "invalid_utf8"),
    10: ("prompt", "prompt_not_user_last"),
    11: (None, "not_an_object"),
    13: ("prompt", "wrong_type"),
    14: ("prompt", "bad_role"),
    17: ("chosen", "too_long"),
}
KEPT_LINES = 4  # lines 1, 9, 12, 16


class TestBadCorpus:
    def test_each_line_gets_its_reason(self, bad_corpus: Path, tmp_path: Path) -> None:
        result = ingest([bad_corpus], tmp_path / "out.parquet")
        rejects = pq.read_table(tmp_path / "out.rejects.parquet")
        assert rejects.schema.equals(REJECT_SCHEMA)
        got = {r["line"]: (r["field"], r["reason"]) for r in rejects.to_pylist()}
        assert got == EXPECTED
        assert all(r == str(bad_corpus) for r in rejects.column("source_file").to_pylist())
        assert result.rows_in == 16  # 17 lines, one blank
        assert result.rows_out == KEPT_LINES
        assert result.rows_in == result.rows_out + result.rows_rejected
        assert sum(result.by_reason.values()) == result.rows_rejected == len(EXPECTED)

    def test_rejects_keep_a_bounded_raw_excerpt(self, bad_corpus: Path) -> None:
        _, rejects = ingest_tables([bad_corpus])
        by_line = {r["line"]: r for r in rejects.to_pylist()}
        assert by_line[2]["raw"].startswith('{"prompt": "Where is the station?"')
        assert "Caf\ufffd or tea?" in by_line[8]["raw"]
        assert len(by_line[17]["raw"]) < RAW_LIMIT + 100
        assert by_line[17]["raw"].endswith("more characters]")

    def test_dedup_rejects_the_repeated_pair(self, bad_corpus: Path) -> None:
        pairs, rejects = ingest_tables([bad_corpus], dedup=True)
        reasons = {r["line"]: r["reason"] for r in rejects.to_pylist()}
        assert reasons[12] == "duplicate"
        assert pairs.num_rows == KEPT_LINES - 1
        assert len(set(pairs.column("id").to_pylist())) == pairs.num_rows

    def test_max_chars_is_configurable(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a" * 11, "rejected": "b" * 10}])
        pairs, rejects = ingest_tables([path], max_chars=10)
        assert pairs.num_rows == 0
        assert rejects.to_pylist()[0]["reason"] == "too_long"
        assert ingest_tables([path], max_chars=11)[0].num_rows == 1

    def test_all_lines_broken_is_an_input_error(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.jsonl"
        path.write_text('{"prompt": \n{"x"\n', "utf-8")
        with pytest.raises(InputError, match=r"no record of .*broken.jsonl could be read: all 2 failed \(first: line 1, invalid_json\)"):
            ingest_tables([path])


class TestInputErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"input file .*nope.jsonl does not exist; check the path"):
            ingest([tmp_path / "nope.jsonl"], tmp_path / "o.parquet")
        assert not (tmp_path / "o.parquet").exists()

    def test_unknown_layout_names_the_columns(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
        with pytest.raises(InputError, match=r"its columns are \['question', 'good', 'bad'\]"):
            ingest_tables([path])

    def test_wrong_column_map_names_the_columns(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
        with pytest.raises(
            InputError, match=r"column map chosen=best: no such column in .*; columns seen: \['question', 'good', 'bad'\]"
        ):
            ingest_tables([path], column_map={"prompt": "question", "chosen": "best", "rejected": "bad"})

    def test_explicit_format_missing_column(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "q.jsonl", [{"chosen": "a", "rejected": "b"}])
        with pytest.raises(InputError, match=r"has no column\(s\) \['prompt'\] needed by format 'paper'"):
            ingest_tables([path], format="paper")

    def test_unknown_extension_and_content(self, tmp_path: Path) -> None:
        path = tmp_path / "data.bin"
        path.write_bytes(b"hello world")
        with pytest.raises(InputError, match=r"can't tell the file type of .*data.bin"):
            ingest_tables([path])


class TestOptions:
    def test_bad_choice_lists_valid_ones(self) -> None:
        with pytest.raises(ConfigError, match=r"invalid ingest option\(s\): safety_pairs='maybe': Input should be 'drop', 'flag' or 'keep'"):
            make_options(safety_pairs="maybe")

    def test_unknown_option(self) -> None:
        with pytest.raises(ConfigError, match=r"dedupe=True: Extra inputs are not permitted"):
            make_options(dedupe=True)

    def test_map_key_must_be_canonical(self) -> None:
        with pytest.raises(ConfigError, match=r"column map key\(s\) \['question'\] are not canonical columns"):
            make_options(column_map={"question": "prompt"})

    def test_map_with_other_format(self) -> None:
        with pytest.raises(ConfigError, match=r"a column map applies to format 'mapped', not 'trl'"):
            make_options(format="trl", column_map={"prompt": "q"})

    def test_parse_column_map(self) -> None:
        assert parse_column_map(["prompt=question", " chosen = good "]) == {"prompt": "question", "chosen": "good"}
        with pytest.raises(ConfigError, match=r"--map 'prompt' is not of the form canonical=source"):
            parse_column_map(["prompt"])

    def test_manifest_records_options(self, bad_corpus: Path, tmp_path: Path) -> None:
        ingest([bad_corpus], tmp_path / "o.parquet", dedup=True, max_chars=1000)
        manifest = json.loads((tmp_path / "o.manifest.json").read_text())
        assert manifest["recipe"]["dedup"] is True and manifest["recipe"]["max_chars"] == 1000
        assert manifest["counts"]["rows_in"] == 16
        assert {f["path"] for f in manifest["files"]} == {"o.parquet", "o.rejects.parquet"}
