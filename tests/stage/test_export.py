"""The staged folder: layout, manifest, card, `datasets` round trip, verify, atomic replace, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from sc_data.errors import ConfigError, VerifyError
from sc_data.stage.export import export
from sc_data.stage.folder import verify
from sc_data.stage.pipeline import stage
from sc_data.stage.plan import plan
from tests.stage.conftest import make_scored

N_ROWS = 120


@pytest.fixture(scope="module")
def scored_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scored")
    table = make_scored(N_ROWS, seed=21, n_prompts=100)
    margin = table.column("ref_margin__margin_mean").to_pylist()
    margin[5] = None  # one row without a score -> rejects
    import pyarrow as pa

    table = table.set_column(table.column_names.index("ref_margin__margin_mean"), "ref_margin__margin_mean", pa.array(margin, pa.float64()))
    pq.write_table(table, folder / "scored.parquet")
    upstream = {
        "kind": "scored",
        "licenses": ["CC-BY-NC-4.0"],
        "scorers": {"ref_margin": {"model": "tiny-lm", "revision": "abc123"}},
        "inputs": [{"path": "raw.jsonl", "sha256": "0" * 64}],
    }
    (folder / "scored.manifest.json").write_text(json.dumps(upstream), "utf-8")
    return folder / "scored.parquet"


@pytest.fixture(scope="module")
def staged(scored_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("staged") / "ds"
    stage(scored_file, out, max_shard_rows=20, dev_fraction=0.1)
    return out


def copy_of(staged: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(staged, target)
    return target


class TestLayout:
    def test_files(self, staged: Path) -> None:
        manifest = json.loads((staged / "sc_manifest.json").read_text())
        tier0 = sorted(p.relative_to(staged).as_posix() for p in (staged / "data" / "tier_0").iterdir())
        rows = manifest["counts"]["by_tier"]["tier_0"]
        n = -(-rows // 20)
        assert tier0 == [f"data/tier_0/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        assert (staged / "data" / "eval" / "test-00000-of-00002.parquet").is_file()  # 24 rows / 20
        assert list((staged / "data" / "dev").iterdir())
        assert (staged / "rejects.parquet").is_file() and (staged / "README.md").is_file()
        assert sorted(p.name for p in (staged / "plots").iterdir()) == [
            "category_tier_heatmap.png",
            "difficulty_histogram.png",
            "score_by_tier.png",
            "score_correlation.png",
        ]

    def test_manifest(self, staged: Path, scored_file: Path) -> None:
        manifest = json.loads((staged / "sc_manifest.json").read_text())
        counts = manifest["counts"]
        assert counts["rows_in"] == N_ROWS == counts["rows_out"] + counts["rows_rejected"]
        assert counts["rows_rejected"] == 1 and counts["rejected_by_reason"] == {"missing_score:ref_margin__margin_mean": 1}
        assert sum(counts["by_split"].values()) == counts["rows_out"]
        nested = counts["by_tier_category_split"]
        assert sum(sum(c.values()) for split in nested.values() for c in split.values()) == counts["rows_out"]
        assert manifest["licenses"] == ["cc-by-nc-4.0"]
        assert manifest["scorers"] == {"ref_margin": {"model": "tiny-lm", "revision": "abc123"}}
        assert manifest["recipe"]["stage"]["tiers"] == 3 and manifest["recipe"]["export"]["max_shard_rows"] == 20
        assert manifest["inputs"][0]["path"] == str(scored_file)
        import hashlib

        assert manifest["inputs"][0]["sha256"] == hashlib.sha256(scored_file.read_bytes()).hexdigest()
        for entry in manifest["files"]:
            assert (staged / entry["path"]).stat().st_size == entry["bytes"]

    def test_card(self, staged: Path) -> None:
        text = (staged / "README.md").read_text()
        front = yaml.safe_load(text.split("---\n")[1])
        configs = {c["config_name"]: c for c in front["configs"]}
        assert set(configs) == {"all", "tier_0", "tier_1", "tier_2"}
        assert configs["all"]["default"] is True
        assert {"split": "dev", "path": "data/dev/*.parquet"} in configs["all"]["data_files"]
        assert configs["tier_1"]["data_files"] == [
            {"split": "train", "path": "data/tier_1/*.parquet"},
            {"split": "test", "path": "data/eval/*.parquet"},
        ]
        assert front["license"] == "cc-by-nc-4.0"
        assert "Content warning" in text and "![difficulty_histogram](plots/difficulty_histogram.png)" in text

    def test_tiers_conversational_and_sorted(self, staged: Path) -> None:
        frame = pd.read_parquet(staged / "data" / "tier_1")
        assert frame["chosen"].iloc[0][0]["role"] == "assistant"
        assert frame["difficulty"].is_monotonic_increasing
        assert (frame["tier"] == 1).all() and (frame["split"] == "train").all()


def load(folder: Path, cache: Path, config: str | None = None) -> dict[str, pd.DataFrame]:
    """``datasets.load_dataset`` of a staged folder into ``cache`` (never the user's HF cache)."""
    import datasets

    loaded = datasets.load_dataset(str(folder), config, cache_dir=str(cache))
    return {split: loaded[split].to_pandas() for split in loaded}


def ids_on_disk(folder: Path, part: str) -> list[str]:
    return pd.read_parquet(folder / "data" / part)["id"].tolist()


class TestDatasetsRoundTrip:
    def test_load_dataset(self, staged: Path, tmp_path: Path) -> None:
        import datasets

        manifest = json.loads((staged / "sc_manifest.json").read_text())
        counts = manifest["counts"]
        tier0 = datasets.load_dataset(str(staged), "tier_0", cache_dir=str(tmp_path))
        assert tier0["train"].num_rows == counts["by_tier"]["tier_0"]
        assert tier0["test"].num_rows == counts["by_split"]["test"]
        assert tier0["train"][0]["prompt"][0]["role"] == "user"
        everything = datasets.load_dataset(str(staged), cache_dir=str(tmp_path))
        assert everything["train"].num_rows == counts["by_split"]["train"]
        assert everything["test"].num_rows == counts["by_split"]["test"]
        assert everything["dev"].num_rows == counts["by_split"]["dev"]

    def test_card_dataset_info_matches_what_datasets_records(self, scored_file: Path, tmp_path: Path) -> None:
        import datasets

        out = tmp_path / "ds"
        stage(scored_file, out, max_shard_rows=20, row_group_rows=7, dev_fraction=0.1, plots=False)
        front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
        infos = {i["config_name"]: i for i in front["dataset_info"]}
        assert set(infos) == {c["config_name"] for c in front["configs"]}
        for name in ("all", "tier_1"):
            built = datasets.load_dataset_builder(str(out), name, cache_dir=str(tmp_path / "cache"))
            built.download_and_prepare()
            recorded = built.info
            card_splits = [s["name"] for s in infos[name]["splits"]]
            assert set(card_splits) == set(recorded.splits)
            assert infos[name] == {
                "config_name": name,
                "splits": [
                    {"name": s, "num_bytes": recorded.splits[s].num_bytes, "num_examples": recorded.splits[s].num_examples}
                    for s in card_splits
                ],
                "download_size": recorded.download_size,
                "dataset_size": recorded.dataset_size,
            }
        manifest = json.loads((out / "sc_manifest.json").read_text())
        tier1_bytes = sum(f["bytes"] for f in manifest["files"] if f.get("config") == "tier_1" or f["path"].startswith("data/eval/"))
        assert infos["tier_1"]["download_size"] == tier1_bytes
        assert {s["name"]: s["num_examples"] for s in infos["all"]["splits"]} == manifest["counts"]["by_split"]

    def test_same_basename_and_restage_in_place_do_not_share_a_cache_entry(
        self, scored_file: Path, tmp_path: Path
    ) -> None:
        smaller = tmp_path / "smaller.parquet"
        pq.write_table(pq.read_table(scored_file).slice(0, 80), smaller)
        first, second = tmp_path / "a" / "staged", tmp_path / "b" / "staged"
        stage(scored_file, first, dev_fraction=0.1, plots=False)
        stage(smaller, second, dev_fraction=0.1, plots=False)
        cache = tmp_path / "hf-cache"  # ONE cache shared by every load below
        for folder in (first, second):
            tier0 = load(folder, cache, "tier_0")
            assert tier0["train"]["id"].tolist() == ids_on_disk(folder, "tier_0")
            assert tier0["test"]["id"].tolist() == ids_on_disk(folder, "eval")
            everything = load(folder, cache)
            assert sorted(everything["train"]["id"]) == sorted(pd.read_parquet(folder / "data", filters=[("split", "=", "train")])["id"])
            assert everything["dev"]["id"].tolist() == ids_on_disk(folder, "dev")
        assert len(ids_on_disk(first, "tier_0")) != len(ids_on_disk(second, "tier_0"))

        stage(smaller, first, overwrite=True, tiers=2, plots=False)  # re-staged in place, fewer rows
        tier0 = load(first, cache, "tier_0")
        assert tier0["train"]["id"].tolist() == ids_on_disk(first, "tier_0")
        assert load(first, cache)["train"].shape[0] == json.loads((first / "sc_manifest.json").read_text())["counts"]["by_split"]["train"]

    def test_every_shard_reads_with_pandas(self, staged: Path) -> None:
        manifest = json.loads((staged / "sc_manifest.json").read_text())
        for entry in manifest["files"]:
            if entry["path"].endswith(".parquet"):
                assert len(pd.read_parquet(staged / entry["path"])) == entry["rows"]


class TestVerify:
    def test_ok(self, staged: Path) -> None:
        report = verify(staged)
        assert report.rows_in == N_ROWS and report.rows_rejected == 1

    def test_flipped_byte(self, staged: Path, tmp_path: Path) -> None:
        root = copy_of(staged, tmp_path)
        shard = root / "data" / "tier_2" / "train-00000-of-00002.parquet"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        with pytest.raises(VerifyError, match=r"data/tier_2/train-00000-of-00002.parquet: sha256 [0-9a-f]{64} differs"):
            verify(root)

    def test_deleted_shard(self, staged: Path, tmp_path: Path) -> None:
        root = copy_of(staged, tmp_path)
        (root / "data" / "eval" / "test-00001-of-00002.parquet").unlink()
        with pytest.raises(VerifyError, match=r"data/eval/test-00001-of-00002.parquet: listed in sc_manifest.json but missing"):
            verify(root)

    def test_extra_file(self, staged: Path, tmp_path: Path) -> None:
        root = copy_of(staged, tmp_path)
        shutil.copy(root / "data" / "tier_0" / "train-00000-of-00002.parquet", root / "data" / "tier_0" / "extra.parquet")
        with pytest.raises(VerifyError, match=r"data/tier_0/extra.parquet: not listed in sc_manifest.json"):
            verify(root)

    def test_hub_client_files_ignored(self, staged: Path, tmp_path: Path) -> None:
        root = copy_of(staged, tmp_path)
        (root / ".gitattributes").write_text("*.parquet filter=lfs\n")
        (root / ".cache" / "huggingface").mkdir(parents=True)
        (root / ".cache" / "huggingface" / "x.metadata").write_text("x")
        assert verify(root).rows_in == N_ROWS

    def test_counts_must_add_up(self, staged: Path, tmp_path: Path) -> None:
        root = copy_of(staged, tmp_path)
        manifest = json.loads((root / "sc_manifest.json").read_text())
        manifest["counts"]["rows_in"] += 1
        (root / "sc_manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(VerifyError, match=r"sc_manifest.json: counts.rows_in is 121 but the files add up to 120"):
            verify(root)

    def test_not_a_staged_folder(self, tmp_path: Path) -> None:
        with pytest.raises(VerifyError, match=r"has no sc_manifest.json; is it a folder written by `sc-data stage`\?"):
            verify(tmp_path)


class TestAtomicity:
    def test_refuses_existing_output(self, scored_file: Path, tmp_path: Path) -> None:
        (tmp_path / "ds").mkdir()
        with pytest.raises(ConfigError, match=r"already exists; pass overwrite=True \(--overwrite\) to replace it"):
            stage(scored_file, tmp_path / "ds")

    def test_overwrite_swaps(self, scored_file: Path, tmp_path: Path) -> None:
        out = tmp_path / "ds"
        stage(scored_file, out, plots=False)
        result = stage(scored_file, out, overwrite=True, tiers=2, plots=False)
        assert result.tiers.keys() == {"tier_0", "tier_1"}
        assert verify(out).rows_in == N_ROWS
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old folder left

    def test_interrupted_export_leaves_nothing(self, scored_file: Path, tmp_path: Path) -> None:
        table = pq.read_table(scored_file)
        result = plan(table)
        bad_parts = {**result.parts, "bogus": np.arange(3)}  # fails after the tier shards are written
        with pytest.raises(KeyError):
            export(result.table, tmp_path / "ds", parts=bad_parts, rejects=result.rejects, recipe={}, inputs=[])
        assert list(tmp_path.iterdir()) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("sc-data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SC_DATA_DEBUG", None)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)


class TestCli:
    def test_stage_verify_report(self, scored_file: Path, tmp_path: Path) -> None:
        out = tmp_path / "ds"
        done = run_cli("stage", str(scored_file), "-o", str(out), "--tiers", "2", "--no-plots", "--json",
                       "--difficulty-column", "judge__severity:easier=2", "--difficulty-column", "ref_margin__margin_mean")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["rows_in"] == N_ROWS and set(result["tiers"]) == {"tier_0", "tier_1"}
        manifest = json.loads((out / "sc_manifest.json").read_text())
        assert [c["weight"] for c in manifest["recipe"]["difficulty_columns"]] == [2.0, 1.0]

        done = run_cli("verify", str(out))
        assert done.returncode == 0 and "OK:" in done.stdout

        done = run_cli("report", str(out), "-o", str(tmp_path / "plots"), "--json")
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)) == 4

        (out / "rejects.parquet").write_bytes(b"not parquet")
        done = run_cli("verify", str(out))
        assert done.returncode == 1
        assert "Error:" in done.stderr and "rejects.parquet" in done.stderr

    def test_stage_config_file_and_errors(self, scored_file: Path, tmp_path: Path) -> None:
        config = tmp_path / "stage.yaml"
        config.write_text("tiers: 4\neval_fraction: 0.25\nplots: false\n")
        done = run_cli("stage", str(scored_file), "-o", str(tmp_path / "ds"), "--config", str(config), "--json")
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["tiers"]) == 4

        done = run_cli("stage", str(scored_file), "-o", str(tmp_path / "ds2"), "--strategy", "quantile")
        assert done.returncode == 1 and "needs cuts" in done.stderr
        done = run_cli("stage", str(scored_file), "-o", str(tmp_path / "ds2"), "--strategy", "median")
        assert done.returncode == 2

    def test_help(self) -> None:
        for command in ("stage", "verify", "report"):
            done = run_cli(command, "--help")
            assert done.returncode == 0 and "Examples" in done.stdout
