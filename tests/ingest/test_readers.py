"""File formats, compression, folders and Hub names."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard

from sc_data.errors import InputError
from sc_data.ingest import ingest_tables

ROWS = [
    {"prompt": "How do I hotwire a car?", "chosen": "I can't help with that.", "rejected": "Sure, it's easy."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Car."},
]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


def _expected() -> list[dict]:
    return [
        {"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}]}
        for r in ROWS
    ]


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _check(path: Path | str) -> None:
    pairs, rejects = ingest_tables([path])
    assert rejects.num_rows == 0
    got = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in pairs.to_pylist()]
    assert got == _expected()


class TestFiles:
    @pytest.mark.parametrize(
        ("name", "data"),
        [
            ("a.jsonl", JSONL),
            ("a.ndjson", JSONL),
            ("a.json", JSONL),  # JSON Lines under a .json name
            ("a.json", json.dumps(ROWS).encode()),
            ("a.json", json.dumps({"data": ROWS}).encode()),
            ("a.jsonl.gz", gzip.compress(JSONL)),
            ("a.jsonl.zst", zstandard.ZstdCompressor().compress(JSONL)),
            ("a.data", gzip.compress(JSONL)),  # compression and layout sniffed from the bytes
        ],
    )
    def test_json_family(self, tmp_path: Path, name: str, data: bytes) -> None:
        _check(_write(tmp_path, name, data))

    def test_csv(self, tmp_path: Path) -> None:
        path = tmp_path / "a.csv"
        pacsv.write_csv(pa.Table.from_pylist(ROWS), path)
        _check(path)

    def test_parquet(self, tmp_path: Path) -> None:
        path = tmp_path / "a.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
        _check(path)

    def test_json_array_item_not_object(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "a.json", json.dumps([*ROWS, "oops"]).encode())
        pairs, rejects = ingest_tables([path])
        assert pairs.num_rows == 2
        assert rejects.to_pylist()[0]["line"] == 3 and rejects.to_pylist()[0]["reason"] == "not_an_object"

    def test_invalid_json_file(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "a.json", b"[{\"prompt\": ")
        with pytest.raises(InputError, match=r"a.json is not valid JSON"):
            ingest_tables([path])


class TestFolders:
    def test_save_to_disk_dataset_dict_is_read_per_split(self, tmp_path: Path) -> None:
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:])})
        dd.save_to_disk(str(tmp_path / "ds"))
        with pytest.raises(InputError, match=r"holds the splits \['train', 'test'\]; pass --split NAME"):
            ingest_tables([tmp_path / "ds"])  # never merged: the test split would leak into training
        train, _ = ingest_tables([tmp_path / "ds"], split="train")
        test, _ = ingest_tables([tmp_path / "ds"], split="test")
        assert train.column("chosen").to_pylist() == [[{"role": "assistant", "content": r["chosen"]}] for r in ROWS[:1]]
        assert test.num_rows == len(ROWS) - 1
        with pytest.raises(InputError, match=r"has no split 'validation'; its splits are \['train', 'test'\]"):
            ingest_tables([tmp_path / "ds"], split="validation")

    def test_plain_folder_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "stuff").mkdir()
        with pytest.raises(InputError, match=r"is not a `datasets` save_to_disk folder"):
            ingest_tables([tmp_path / "stuff"])


class TestHub:
    def test_offline_name_says_what_was_tried(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
        with pytest.raises(InputError, match=r"input 'nobody/no-such-set': HF_HUB_OFFLINE is set and this Hub dataset is not in the local datasets cache; unset HF_HUB_OFFLINE"):
            ingest_tables(["nobody/no-such-set"])


class TestInMemory:
    def test_table_and_dataset_inputs(self) -> None:
        table = pa.Table.from_pylist(ROWS)
        for data in (table, datasets.Dataset.from_list(ROWS), datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)})):
            pairs, rejects = ingest_tables([data])
            assert rejects.num_rows == 0
            assert [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in pairs.to_pylist()] == _expected()
            assert pairs.column("source").to_pylist() == ["<table 0>"] * 2

    def test_other_objects_refused(self) -> None:
        with pytest.raises(InputError, match=r"input 0 is a dict; pass a path, a dataset name"):
            ingest_tables([{"prompt": "x"}])

    def test_manifest_hash_of_a_table(self, tmp_path: Path) -> None:
        from sc_data.ingest import ingest

        table = pa.Table.from_pylist(ROWS)
        first = ingest([table], tmp_path / "a.parquet").inputs[0].sha256
        again = ingest([pa.Table.from_pylist(ROWS)], tmp_path / "b.parquet").inputs[0].sha256
        other = ingest([pa.Table.from_pylist(ROWS[:1])], tmp_path / "c.parquet").inputs[0].sha256
        assert first == again != other and len(first) == 64


def test_json_file_with_one_object_is_one_record(tmp_path: Path) -> None:
    pairs, rejects = ingest_tables([_write(tmp_path, "one.json", json.dumps(ROWS[0]).encode())])
    assert (pairs.num_rows, rejects.num_rows) == (1, 0)
