"""Staged folders always load, never destroy what sc-data did not write, and verify catches what drifts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sc_data.errors import ConfigError, InputError, VerifyError
from sc_data.stage.folder import verify
from sc_data.stage.pipeline import stage
from tests.stage.conftest import make_scored


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _load_every_config(folder: Path, cache: Path) -> dict[str, dict[str, int]]:
    """Load every config the card lists with `datasets`; config -> split -> rows."""
    import datasets

    meta = yaml.safe_load((folder / "README.md").read_text("utf-8").split("---")[1])
    out = {}
    for config in meta["configs"]:
        loaded = datasets.load_dataset(str(folder), config["config_name"], cache_dir=str(cache))
        out[config["config_name"]] = {split: loaded[split].num_rows for split in loaded}
    return out


@pytest.fixture(scope="module")
def scored_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scored") / "scored.parquet"
    pq.write_table(make_scored(90, seed=4, n_prompts=70), path)
    return path


class TestEveryConfigLoads:
    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"strategy": "quantile", "cuts": [0.2, 0.5]},
            {"strategy": "threshold", "cuts": [0.0], "threshold_column": "ref_margin__margin_mean:easier"},
            {"strategy": "kmeans", "tiers": 4},
            {"stratify": "category"},
            {"eval_fraction": 0.0},
            {"dev_fraction": 0.1},
            {"tiers": 40, "eval_fraction": 0.5},  # K > training rows per tier: empty tiers
        ],
        ids=["equal", "quantile", "threshold", "kmeans", "stratified", "no_eval", "dev", "k_over_rows"],
    )
    def test_strategies_and_edges(self, scored_file: Path, tmp_path: Path, options: dict) -> None:
        out = tmp_path / "ds"
        result = stage(scored_file, out, plots=False, **options)
        verify(out)
        loaded = _load_every_config(out, tmp_path / "cache")
        tiers = {k: v for k, v in result.tiers.items() if v}
        assert set(loaded) == {"all", *tiers}
        for tier, rows in tiers.items():
            assert loaded[tier]["train"] == rows
        assert loaded["all"]["train"] == sum(tiers.values())
        assert loaded["all"].get("test", 0) == result.splits.get("eval", 0)
        assert all(v > 0 for splits in loaded.values() for v in splits.values())
        empty = [k for k, v in result.tiers.items() if not v]
        assert all(any(k in w for w in result.warnings) for k in empty)
        if not result.splits.get("eval"):
            assert any("no eval split" in w for w in result.warnings)

    def test_one_row(self, tmp_path: Path) -> None:
        path = tmp_path / "one.parquet"
        pq.write_table(make_scored(1, seed=0), path)
        out = tmp_path / "ds"
        result = stage(path, out, plots=False, eval_fraction=0.0)
        assert sum(result.tiers.values()) == 1
        verify(out)
        assert _load_every_config(out, tmp_path / "cache")["all"] == {"train": 1}

    def test_nothing_to_train_on_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "two.parquet"
        table = make_scored(2, seed=0)
        margin = pa.array([None, None], pa.float64())
        table = table.set_column(table.column_names.index("ref_margin__margin_mean"), "ref_margin__margin_mean", margin)
        pq.write_table(table, path)
        with pytest.raises(InputError, match=r"no training pair left to stage"):
            stage(path, tmp_path / "ds", plots=False)
        pq.write_table(table.slice(0, 0), path)
        with pytest.raises(InputError, match=r"holds no pairs; nothing to stage"):
            stage(path, tmp_path / "ds", plots=False)
        assert not (tmp_path / "ds").exists()

    def test_nonfinite_scores_follow_missing(self, tmp_path: Path) -> None:
        table = make_scored(30, seed=2)
        margin = table.column("ref_margin__margin_mean").to_pylist()
        margin[3], margin[7] = float("inf"), float("-inf")
        table = table.set_column(table.column_names.index("ref_margin__margin_mean"), "ref_margin__margin_mean", pa.array(margin))
        path = tmp_path / "inf.parquet"
        pq.write_table(table, path)
        dropped = stage(path, tmp_path / "drop", plots=False)
        assert dropped.rows_rejected == 2
        rejects = pq.read_table(tmp_path / "drop" / "rejects.parquet").to_pylist()
        assert sorted(r["line"] for r in rejects) == [3, 7] and {r["reason"] for r in rejects} == {"missing_score:ref_margin__margin_mean"}
        kept = stage(path, tmp_path / "hard", plots=False, missing="hardest")
        assert kept.rows_rejected == 0


class TestOverwrite:
    def test_foreign_files_are_never_replaced(self, scored_file: Path, tmp_path: Path) -> None:
        notes = tmp_path / "mine"
        (notes / "sub").mkdir(parents=True)
        (notes / "notes.txt").write_text("my notes")
        (notes / "sub" / "draft.md").write_text("draft")
        before = _files(notes)
        with pytest.raises(ConfigError, match=r"refusing to replace .*mine.*not a staged dataset sc-data wrote.*notes.txt"):
            stage(scored_file, notes, plots=False, overwrite=True)
        assert _files(notes) == before

        staged = tmp_path / "ds"
        stage(scored_file, staged, plots=False)
        (staged / "data" / "my_extra.parquet").write_bytes(b"x")
        before = _files(staged)
        with pytest.raises(ConfigError, match=r"holds files sc-data did not write: \['data/my_extra.parquet'\]"):
            stage(scored_file, staged, plots=False, overwrite=True, tiers=2)
        assert _files(staged) == before
        with pytest.raises(ConfigError, match=r"already exists; pass overwrite=True"):
            stage(scored_file, staged, plots=False)

    def test_files_a_hub_client_might_have_added_are_not_replaced(self, scored_file: Path, tmp_path: Path) -> None:
        """``verify`` passes them (a downloaded copy has them), but they may be the user's: replacing the folder refuses."""
        staged = tmp_path / "ds"
        stage(scored_file, staged, plots=False)
        (staged / ".gitattributes").write_text("*.parquet filter=lfs\n")
        (staged / ".cache").mkdir()
        (staged / ".cache" / "notes.txt").write_text("my notes")
        verify(staged)
        before = _files(staged)
        with pytest.raises(ConfigError, match=r"holds files sc-data did not write: \['.cache/notes.txt', '.gitattributes'\]"):
            stage(scored_file, staged, plots=False, overwrite=True)
        assert _files(staged) == before

    def test_a_malformed_manifest_is_refused_not_a_traceback(self, scored_file: Path, tmp_path: Path) -> None:
        staged = tmp_path / "ds"
        stage(scored_file, staged, plots=False)
        path = staged / "sc_manifest.json"
        good = json.loads(path.read_text())
        for files in ("data", ["data/x.parquet"], [{"rows": 1}], [{"path": None}]):
            path.write_text(json.dumps({**good, "files": files}))
            with pytest.raises(ConfigError, match=r"its sc_manifest.json can't be read .*malformed 'files'"):
                stage(scored_file, staged, plots=False, overwrite=True)

    def test_killed_mid_swap_the_old_folder_comes_back(self, scored_file: Path, tmp_path: Path) -> None:
        """Killed between moving the old folder aside and renaming the new one in: the next run finds the old folder in place."""
        staged = tmp_path / "ds"
        stage(scored_file, staged, plots=False)
        before = _files(staged)
        staged.rename(tmp_path / ".ds.old-1a2b3c4d")  # what the kill leaves
        with pytest.raises(ConfigError, match=r"already exists; pass overwrite=True"):
            stage(scored_file, staged, plots=False)
        assert _files(staged) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
        verify(staged)

    def test_killed_mid_write_leaves_the_old_folder_intact(self, tmp_path: Path) -> None:
        scored = tmp_path / "big.parquet"
        pq.write_table(make_scored(40_000, seed=5), scored)
        out = tmp_path / "ds"
        stage(scored, out, plots=False, max_shard_rows=2000)
        before = _files(out)
        code = ("import sys; from sc_data.stage.pipeline import stage; "
                "stage(sys.argv[1], sys.argv[2], overwrite=True, tiers=5, max_shard_rows=50)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(scored), str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.name.startswith(".ds.") and p.name.endswith(".staging") and any(p.rglob("*.parquet")) for p in tmp_path.iterdir()):
            time.sleep(0.02)
        assert proc.poll() is None, "the export finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _files(out) == before
        verify(out)
        stage(scored, out, overwrite=True, plots=False, max_shard_rows=2000)  # the next run clears the killed one's debris
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.parquet", "ds"]


class TestVerifyCatches:
    @pytest.fixture
    def staged(self, scored_file: Path, tmp_path: Path) -> Path:
        out = tmp_path / "ds"
        stage(scored_file, out, plots=False)
        return out

    @staticmethod
    def _edit_card(folder: Path, edit) -> None:
        card = (folder / "README.md").read_text("utf-8")
        _, front, body = card.split("---", 2)
        meta = yaml.safe_load(front)
        edit(meta)
        (folder / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---{body}", "utf-8")

    def test_a_config_pointing_at_another_tier(self, staged: Path) -> None:
        def swap(meta: dict) -> None:
            tier0 = next(c for c in meta["configs"] if c["config_name"] == "tier_0")
            tier0["data_files"][0]["path"] = "data/tier_2/*.parquet"

        self._edit_card(staged, swap)
        with pytest.raises(VerifyError, match=r"config 'tier_0' split 'train' reads \['data/tier_2/.*'\] but its shards are \['data/tier_0/"):
            verify(staged)

    def test_missing_dataset_info(self, staged: Path) -> None:
        self._edit_card(staged, lambda meta: meta.pop("dataset_info"))
        with pytest.raises(VerifyError, match=r"config 'all' has no dataset_info"):
            verify(staged)

    def test_edited_counts(self, staged: Path) -> None:
        path = staged / "sc_manifest.json"
        manifest = json.loads(path.read_text())
        manifest["counts"]["by_tier"]["tier_1"] += 1
        path.write_text(json.dumps(manifest))
        with pytest.raises(VerifyError, match=r"counts.by_tier is .* but the files add up to"):
            verify(staged)
        manifest["counts"]["by_tier"]["tier_1"] -= 1
        cats = manifest["counts"]["by_tier_category_split"]["train"]["tier_0"]
        first = sorted(cats)[0]
        cats[first] += 1
        path.write_text(json.dumps(manifest))
        with pytest.raises(VerifyError, match=r"counts.by_tier_category_split is"):
            verify(staged)

    @pytest.mark.parametrize("edit", [
        lambda m: m["files"][0].pop("path"), lambda m: m["files"][0].pop("bytes"), lambda m: m["files"][0].update(path=3),
        lambda m: m.update(files="data"), lambda m: m.update(files=["data/x.parquet"]), lambda m: m.update(counts=[]),
        lambda m: next(f for f in m["files"] if f.get("kind") == "data").pop("split"),
        lambda m: m["files"][0].update(path="../outside.parquet"), lambda m: m["files"][0].update(path="/etc/passwd"),
    ])
    def test_a_malformed_manifest_is_one_verify_error(self, staged: Path, edit) -> None:
        path = staged / "sc_manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))
        with pytest.raises(VerifyError, match=r"sc_manifest.json: ('files' must be a list|files\[0\] has no valid|files\[\d+\] has no valid 'split')"):
            verify(staged)

    @pytest.mark.parametrize("edit", [
        lambda meta: meta["configs"][0].update(data_files="data/tier_0/*.parquet"),
        lambda meta: meta["configs"][0].update(data_files=["data/tier_0/*.parquet"]),
        lambda meta: meta["dataset_info"][0].update(splits="train"),
    ])
    def test_card_forms_sc_data_does_not_write(self, staged: Path, edit) -> None:
        self._edit_card(staged, edit)
        with pytest.raises(VerifyError, match=r"data_files or dataset_info splits are not the lists of objects sc-data writes"):
            verify(staged)

    def test_a_card_config_without_a_name(self, staged: Path) -> None:
        self._edit_card(staged, lambda meta: meta["configs"][0].update(config_nam=meta["configs"][0].pop("config_name")))
        with pytest.raises(VerifyError, match=r"a config without a config_name"):
            verify(staged)

    def test_a_card_that_is_not_utf8(self, staged: Path) -> None:
        (staged / "README.md").write_bytes(b"---\nconfigs: \xff\n---\n")
        with pytest.raises(VerifyError, match=r"README.md: not UTF-8 text"):
            verify(staged)

    def test_a_card_without_front_matter(self, staged: Path) -> None:
        (staged / "README.md").write_text("# just a title\n", "utf-8")
        with pytest.raises(VerifyError, match=r"no YAML front matter"):
            verify(staged)

    def test_tampered_shard_still_caught(self, staged: Path) -> None:
        shard = next((staged / "data" / "tier_0").glob("*.parquet"))
        table = pq.read_table(shard)
        pq.write_table(table.slice(1), shard)
        with pytest.raises(VerifyError, match=r"tier_0/train-.*\.parquet: .*(bytes|sha256|rows)"):
            verify(staged)
