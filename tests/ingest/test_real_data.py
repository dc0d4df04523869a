"""Ingest of the three real files in the shared data folder (see its README)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from sc_data.ingest import ingest, ingest_tables
from sc_data.schema import pair_schema, taxonomy
from tests.reference import pair_id

PAPER = "paper/hh_rlhf_clean_gpt.jsonl"
HH = "hh-rlhf/harmless-base-test.jsonl.gz"
PKU = "pku-saferlhf/alpaca7b_test_head.jsonl"


class TestCounts:
    def test_paper_all_rows_kept(self, shared_data: Path, tmp_path: Path) -> None:
        result = ingest([shared_data / PAPER], tmp_path / "paper.parquet")
        assert (result.rows_in, result.rows_out, result.rows_rejected) == (3969, 3969, 0)
        assert result.inputs[0].format == "paper"
        table = pq.read_table(tmp_path / "paper.parquet")
        assert table.num_rows == 3969 and table.schema.equals(pair_schema())
        first = json.loads((shared_data / PAPER).open().readline())
        row = table.slice(0, 1).to_pylist()[0]
        assert row["prompt"] == [{"role": "user", "content": first["prompt"].removeprefix("Human: ").strip()}]
        assert row["chosen"] == [{"role": "assistant", "content": first["chosen"].strip()}]
        assert row["id"] == pair_id(row["prompt"], row["chosen"], row["rejected"])
        assert not any(p[0]["content"].startswith("Human:") for p in table.column("prompt").to_pylist())

    def test_hh_counts_add_up_with_reasons(self, shared_data: Path, tmp_path: Path) -> None:
        result = ingest([shared_data / HH], tmp_path / "hh.parquet")
        assert result.rows_in == 2312
        assert result.rows_in == result.rows_out + result.rows_rejected
        # 4 rows end in an empty Assistant turn; 5 have a rejected conversation with a turn
        # missing or extra relative to chosen's (see sc_data/ingest/hh_rlhf.py).
        assert result.by_reason == {"empty_text": 4, "prompt_mismatch": 5}
        rejects = pq.read_table(tmp_path / "hh.rejects.parquet").to_pylist()
        assert sorted(r["line"] for r in rejects if r["reason"] == "empty_text") == [87, 517, 926, 1104]
        manifest = json.loads((tmp_path / "hh.manifest.json").read_text())
        assert manifest["counts"]["rows_in"] == 2312
        assert manifest["counts"]["rows_out"] + manifest["counts"]["rows_rejected"] == 2312
        assert manifest["inputs"][0]["format"] == "hh-rlhf"
        assert manifest["licenses"] == ["MIT"]

    def test_known_licences_reach_the_card(self, shared_data: Path, tmp_path: Path) -> None:
        import numpy as np
        import pyarrow as pa
        import yaml

        from sc_data.stage.pipeline import stage

        ingest([shared_data / HH], tmp_path / "hh.parquet")
        table = pq.read_table(tmp_path / "hh.parquet")
        table = table.append_column("ref_margin__margin_mean", pa.array(np.random.default_rng(0).normal(size=table.num_rows)))
        pq.write_table(table, tmp_path / "scored.parquet")
        (tmp_path / "scored.manifest.json").write_bytes((tmp_path / "hh.manifest.json").read_bytes())
        stage(tmp_path / "scored.parquet", tmp_path / "staged", plots=False)
        card = (tmp_path / "staged" / "README.md").read_text("utf-8")
        assert yaml.safe_load(card.split("---")[1])["license"] == "mit"
        assert "Licences of the sources: mit." in card

    def test_hh_multi_turn_prompts_end_with_user(self, shared_data: Path) -> None:
        pairs, _ = ingest_tables([shared_data / HH])
        prompts = pairs.column("prompt").to_pylist()
        multi = [p for p in prompts if len(p) > 1]
        assert len(multi) > 1000
        assert all(p[-1]["role"] == "user" for p in prompts)
        assert all(p[0]["role"] == "user" for p in prompts)

    def test_hh_split_matches_raw_text(self, shared_data: Path) -> None:
        pairs, _ = ingest_tables([shared_data / HH])
        raw = json.loads(gzip.open(shared_data / HH, "rt").readline())
        row = pairs.slice(0, 1).to_pylist()[0]
        answer = raw["chosen"].rsplit("\n\nAssistant:", 1)[1].strip()
        assert row["chosen"] == [{"role": "assistant", "content": answer}]
        rebuilt = "".join(
            f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in row["prompt"]
        )
        assert raw["chosen"].startswith(rebuilt)

    @pytest.mark.parametrize(("policy", "expected_out"), [("drop", 52), ("flag", 339), ("keep", 339)])
    def test_pku_counts(self, shared_data: Path, tmp_path: Path, policy: str, expected_out: int) -> None:
        result = ingest([shared_data / PKU], tmp_path / "pku.parquet", safety_pairs=policy)
        assert result.rows_in == 339 == result.rows_out + result.rows_rejected
        assert result.rows_out == expected_out
        if policy == "drop":
            assert result.by_reason == {"safety_pair:safe/safe": 159, "safety_pair:unsafe/unsafe": 128}
        manifest = json.loads((tmp_path / "pku.manifest.json").read_text())
        assert manifest["licenses"] == ["CC-BY-NC-4.0"]
        assert manifest["recipe"]["safety_pairs"] == policy


class TestPkuCategories:
    def test_unsafe_rejected_carries_its_categories(self, shared_data: Path) -> None:
        pairs, _ = ingest_tables([shared_data / PKU], safety_pairs="keep")
        mapping = taxonomy()["mappings"]["pku-saferlhf"]
        raws = [json.loads(line) for line in (shared_data / PKU).open()]
        rows = pairs.to_pylist()
        assert len(rows) == len(raws)
        checked = 0
        for raw, row in zip(raws, rows, strict=True):
            rejected_k = 1 - raw["safer_response_id"]
            assert row["rejected"][0]["content"] == raw[f"response_{rejected_k}"]
            assert row["chosen"][0]["content"] == raw[f"response_{raw['safer_response_id']}"]
            assert row["rejected_safe"] is raw[f"is_response_{rejected_k}_safe"]
            expected = {mapping[k] for k, v in raw[f"response_{rejected_k}_harm_category"].items() if v}
            assert set(row["categories"]) == expected
            if not raw[f"is_response_{rejected_k}_safe"]:
                assert row["categories"], "an unsafe rejected answer must carry categories"
                assert row["category"] in row["categories"]
                checked += 1
        assert checked == 180

    def test_prefer_better_uses_better_id(self, shared_data: Path) -> None:
        pairs, _ = ingest_tables([shared_data / PKU], safety_pairs="keep", prefer="better")
        raws = [json.loads(line) for line in (shared_data / PKU).open()]
        for raw, row in zip(raws, pairs.to_pylist(), strict=True):
            assert row["chosen"][0]["content"] == raw[f"response_{raw['better_response_id']}"]


class TestRoundTrip:
    def test_parquet_and_datasets_keep_every_value(self, shared_data: Path, tmp_path: Path) -> None:
        out = tmp_path / "all.parquet"
        ingest([shared_data / PKU, shared_data / HH], out, safety_pairs="keep")
        table = pq.read_table(out)
        rows = table.to_pylist()
        again, _ = ingest_tables([out])
        assert again.to_pylist() == rows
        ds = datasets.Dataset.from_parquet(str(out))
        assert ds.num_rows == len(rows)
        assert ds.to_list() == rows
        assert ds.data.table.select(table.column_names).cast(table.schema).equals(table)
