"""``sc_data.inspect``: summaries checked against straightforward per-row computations."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_data.errors import InputError
from sc_data.inspect import inspect, summarize
from sc_data.schema import pair_schema


def _pairs(n: int = 40) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        turns = [{"role": "user", "content": "q" * int(rng.integers(1, 50))}]
        if i % 3 == 0:
            turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, *turns]
        rows.append({
            "id": f"id{i % 37}",  # ids 0..2 repeat once
            "prompt": turns,
            "chosen": [{"role": "assistant", "content": "c" * int(rng.integers(0, 300))}],
            "rejected": [{"role": "assistant", "content": "é" * int(rng.integers(1, 300))}],
            "categories": [["privacy", "cybercrime"], [], ["privacy"]][i % 3],
            "category": ["cybercrime", None, "privacy"][i % 3],
            "source": "t",
            "chosen_safe": [True, None][i % 2],
            "rejected_safe": False,
        })
    return pa.Table.from_pylist(rows, schema=pair_schema())


def _chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


class TestPairs:
    def test_lengths_match_per_row_reference(self) -> None:
        table = _pairs()
        summary = summarize(table)
        rows = table.to_pylist()
        for name in ("prompt", "chosen", "rejected"):
            reference = np.array([_chars(r[name]) for r in rows], dtype=np.float64)
            for q in (5, 50, 95):
                assert summary["lengths"][name][f"p{q}"] == pytest.approx(np.percentile(reference, q), abs=1e-9)

    def test_sliced_table_lengths(self) -> None:
        table = _pairs().slice(7, 20)
        summary = summarize(table)
        reference = [_chars(r["chosen"]) for r in table.to_pylist()]
        assert summary["lengths"]["chosen"]["p50"] == pytest.approx(float(np.median(reference)))

    def test_counts(self) -> None:
        table = _pairs()
        summary = summarize(table)
        rows = table.to_pylist()
        assert summary["rows"] == 40
        assert summary["duplicate_ids"] == 3
        assert summary["prompt_turns"] == dict(Counter(len(r["prompt"]) for r in rows))
        assert summary["categories"] == {"cybercrime": 14, "privacy": 27}
        assert summary["category"] == {"cybercrime": 14, "null": 13, "privacy": 13}
        assert summary["chosen_safe"] == {"null": 20, "true": 20}
        assert summary["rejected_safe"] == {"false": 40}
        keys = Counter((len(r["prompt"]), r["prompt"][-1]["content"]) for r in rows)
        assert summary["duplicate_prompts"] == sum(n - 1 for n in keys.values())
        assert "scores" not in summary and "tier" not in summary


class TestScoredAndStaged:
    def _scored(self) -> pa.Table:
        table = _pairs()
        margin = [float(i) - 10.0 for i in range(40)]
        margin[3] = None
        return (
            table.append_column("ref_margin__margin_mean", pa.array(margin, pa.float64()))
            .append_column("judge__severity", pa.array([i % 4 for i in range(40)], pa.int64()))
            .append_column("judge__error", pa.array([None] * 40, pa.string()))
            .append_column("difficulty", pa.array(np.linspace(0, 1, 40)))
            .append_column("tier", pa.array([i * 3 // 40 for i in range(40)], pa.int64()))
            .append_column("split", pa.array(["train"] * 32 + ["eval"] * 8))
        )

    def test_scored_file(self, tmp_path: Path) -> None:
        pq.write_table(self._scored(), tmp_path / "scored.parquet")
        summary = inspect(tmp_path / "scored.parquet")
        values = [float(i) - 10.0 for i in range(40) if i != 3]
        assert summary["scores"]["ref_margin__margin_mean"] == pytest.approx(
            {"min": min(values), "mean": float(np.mean(values)), "max": max(values), "nulls": 1}
        )
        assert summary["scores"]["judge__severity"]["max"] == 3.0
        assert "judge__error" not in summary["scores"]  # string column: no statistics
        assert summary["difficulty"] == pytest.approx({"min": 0.0, "mean": 0.5, "max": 1.0, "nulls": 0})
        assert summary["tier"] == {"0": 14, "1": 13, "2": 13}
        assert summary["split"] == {"eval": 8, "train": 32}

    def test_staged_folder_reads_every_shard(self, tmp_path: Path) -> None:
        table = self._scored()
        (tmp_path / "staged").mkdir()
        (tmp_path / "staged" / "sc_manifest.json").write_text(json.dumps({"kind": "staged"}))
        for tier in range(3):
            part = table.filter(pa.compute.equal(table.column("tier"), tier))
            shard = tmp_path / "staged" / "data" / f"tier_{tier}"
            shard.mkdir(parents=True)
            half = part.num_rows // 2
            pq.write_table(part.slice(0, half), shard / "train-00000-of-00002.parquet")
            pq.write_table(part.slice(half), shard / "train-00001-of-00002.parquet")
        eval_dir = tmp_path / "staged" / "data" / "eval"
        eval_dir.mkdir()
        pq.write_table(table.slice(0, 5).drop_columns(["tier"]).append_column("tier", pa.nulls(5, pa.int64())), eval_dir / "test-00000-of-00001.parquet")
        pq.write_table(table.slice(0, 2), tmp_path / "staged" / "rejects.parquet")
        summary = inspect(tmp_path / "staged")
        assert summary["rows"] == 45
        assert summary["tier"] == {"0": 14, "1": 13, "2": 13, "null": 5}

    def test_missing_path(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"nope.parquet does not exist; pass a pairs Parquet or a staged dataset folder"):
            inspect(tmp_path / "nope.parquet")

    def test_not_parquet(self, tmp_path: Path) -> None:
        (tmp_path / "x.parquet").write_text("hello")
        with pytest.raises(InputError, match=r"can't read .*x.parquet as Parquet"):
            inspect(tmp_path / "x.parquet")

    def test_columns_of_other_types_are_left_out_not_a_traceback(self, tmp_path: Path) -> None:
        """A Parquet whose known column names hold other types (another tool's, or damaged): summarised as far as it can be."""
        table = pa.table({
            "prompt": pa.array([[{"role": "user", "content": None}], None], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            "chosen": pa.array([[{"role": "assistant"}], [{"role": "assistant"}]], pa.list_(pa.struct([("role", pa.string())]))),
            "rejected": pa.array([[{"role": "assistant", "content": None}]] * 2,
                                 pa.list_(pa.struct([("role", pa.string()), ("content", pa.null())]))),
            "difficulty": ["easy", "hard"],
            "categories": pa.array([[1], [2]], pa.list_(pa.int64())),
            "tier": [float("nan"), 1.0],
        })
        pq.write_table(table, tmp_path / "odd.parquet")
        summary = inspect(tmp_path / "odd.parquet")
        assert summary["rows"] == 2 and summary["prompt_turns"] == {0: 1, 1: 1} and summary["duplicate_prompts"] == 0
        assert set(summary["lengths"]) == {"prompt"} and "difficulty" not in summary and "categories" not in summary
        assert summary["tier"] == {"1.0": 1, "nan": 1}

    def test_large_string_columns_as_polars_writes_them(self, tmp_path: Path) -> None:
        message = pa.struct([("role", pa.large_string()), ("content", pa.large_string())])
        table = pa.table({
            "id": pa.array(["a", "a"], pa.large_string()),
            "prompt": pa.array([[{"role": "user", "content": "Hi  there"}], [{"role": "user", "content": "hi there"}]], pa.large_list(message)),
            "categories": pa.array([["x"], ["x", "y"]], pa.list_(pa.large_string())),
        })
        pq.write_table(table, tmp_path / "polars.parquet")
        summary = inspect(tmp_path / "polars.parquet")
        assert summary["lengths"]["prompt"]["p50"] == 8.5 and summary["prompt_turns"] == {1: 2}
        assert (summary["duplicate_prompts"], summary["duplicate_ids"], summary["categories"]) == (1, 1, {"x": 2, "y": 1})

    def test_a_prompt_without_roles_and_list_ids_are_left_out(self, tmp_path: Path) -> None:
        table = pa.table({"prompt": pa.array([[{"content": "hi"}]], pa.list_(pa.struct([("content", pa.string())]))),
                          "id": pa.array([["a"]], pa.list_(pa.string()))})
        pq.write_table(table, tmp_path / "odd.parquet")
        summary = inspect(tmp_path / "odd.parquet")
        assert summary["rows"] == 1 and "prompt_turns" not in summary and "duplicate_ids" not in summary

    def test_shards_that_disagree_on_types_are_one_error(self, tmp_path: Path) -> None:
        pq.write_table(pa.table({"difficulty": [0.5]}), tmp_path / "a.parquet")
        pq.write_table(pa.table({"difficulty": ["hard"]}), tmp_path / "b.parquet")
        with pytest.raises(InputError, match=r"don't agree on their columns' types"):
            inspect(tmp_path)
