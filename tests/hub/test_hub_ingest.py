"""Hub datasets as ingest and score inputs: the real `sc-data` CLI and `datasets` in fresh processes
read a DatasetDict (two configs, train/test splits, two commits) from the loopback Hub, one split
at a time, streamed or not, at a chosen revision, and offline from the cache afterwards."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_data.ingest import ingest_tables
from tests.hub.conftest import dataset_v1_then_main, parquet_bytes
from tests.hub.fake_hub import FakeHub
from tests.hub.test_cli import SC_DATA, flat, run

REPO = "sc-org/prefs"
CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
- config_name: extra
  data_files:
  - split: train
    path: extra/train-*
---
# prefs
"""


def rows(start: int, stop: int) -> list[dict[str, str]]:
    """TRL-standard pairs; row i differs from every other row, so its id is its own."""
    return [{"prompt": f"How do I do thing {i}?", "chosen": f"I can't help with thing {i}.",
             "rejected": f"Sure, here is how to do thing {i}."} for i in range(start, stop)]


def expected_ids(start: int, stop: int) -> list[str]:
    """The ids the file path gives the same rows: an independent read of them."""
    return ingest_tables([pa.Table.from_pylist(rows(start, stop))])[0].column("id").to_pylist()


def ids_of(path: Path) -> list[str]:
    return pq.read_table(path).column("id").to_pylist()


def manifest_of(path: Path) -> dict:
    return json.loads(path.with_name(f"{path.stem}.manifest.json").read_text())


@pytest.fixture
def hub_prefs(hub_client: FakeHub) -> dict[str, str]:
    """``sc-org/prefs``: commit v1 (train 0-5, test 100-102, extra 200-201), then main adds train row 6.

    Returns the commit ids by name ("v1", "main").
    """
    files = {
        "README.md": CARD.encode(),
        "data/train-00000-of-00001.parquet": parquet_bytes(rows(0, 6)),
        "data/test-00000-of-00001.parquet": parquet_bytes(rows(100, 103)),
        "extra/train-00000-of-00001.parquet": parquet_bytes(rows(200, 202)),
    }
    return dataset_v1_then_main(REPO, files, {"data/train-00000-of-00001.parquet": parquet_bytes(rows(0, 7))}, "v2: one more pair")


def ingest(args: list[str], env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    return run([SC_DATA, "ingest", *args, "-o", str(out), "--json"], env)


class TestHubIngest:
    def test_each_split_alone_with_what_was_read_in_the_manifest(
        self, hub_prefs: dict[str, str], hub_env: dict[str, str], tmp_path: Path
    ) -> None:
        train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
        for split, out in (("train", train), ("test", test)):
            proc = ingest([REPO, "--split", split], hub_env, out)
            assert proc.returncode == 0, proc.stderr
        assert ids_of(train) == expected_ids(0, 7)
        assert ids_of(test) == expected_ids(100, 103)
        assert not set(ids_of(train)) & set(ids_of(test))  # the test split is not in the train output
        manifest = manifest_of(train)
        assert manifest["inputs"][0]["hub"] == {
            "repo_id": REPO, "config": "default", "split": "train", "revision": None, "commit": hub_prefs["main"],
            "streaming": False,
        }
        assert manifest["counts"]["rows_out"] == 7
        assert {k: manifest["recipe"][k] for k in ("split", "subset", "revision", "streaming")} == {
            "split": "train", "subset": None, "revision": None, "streaming": False,
        }

    def test_several_splits_without_split_are_refused_naming_them(self, hub_prefs: dict[str, str], hub_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
        proc = ingest([REPO], hub_env, tmp_path / "all.parquet")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert flat(proc.stderr).startswith(f"Error: {REPO} holds the splits ['train', 'test']; pass --split NAME")
        assert not (tmp_path / "all.parquet").exists()
        assert not list((tmp_path / "hf_home").rglob("*.arrow"))  # refused before any split was prepared

    def test_streaming_at_a_revision_and_a_second_config(self, hub_prefs: dict[str, str], hub_env: dict[str, str],
                                                          tmp_path: Path) -> None:
        old = tmp_path / "v1.parquet"
        proc = ingest([f"{REPO}@v1", "--split", "train", "--streaming"], hub_env, old)
        assert proc.returncode == 0, proc.stderr
        assert ids_of(old) == expected_ids(0, 6)  # v1's six rows, not main's seven
        hub = manifest_of(old)["inputs"][0]["hub"]
        assert hub == {"repo_id": REPO, "config": "default", "split": "train", "revision": "v1", "commit": hub_prefs["v1"],
                       "streaming": True}
        assert not list((tmp_path / "hf_home").rglob("*.arrow"))  # streamed: nothing was prepared on disk

        extra = tmp_path / "extra.parquet"
        proc = ingest([REPO, "--subset", "extra", "--split", "train", "--revision", hub_prefs["v1"]], hub_env, extra)
        assert proc.returncode == 0, proc.stderr
        assert ids_of(extra) == expected_ids(200, 202)
        assert manifest_of(extra)["inputs"][0]["hub"]["config"] == "extra"

        clash = ingest([f"{REPO}@v1", "--split", "train", "--revision", "main"], hub_env, tmp_path / "clash.parquet")
        assert clash.returncode == 1 and "Traceback" not in clash.stderr
        assert f"Error: {REPO}@v1 names revision 'v1' and --revision is 'main'; give the revision once" in flat(clash.stderr)

    def test_offline_from_the_cache_and_one_error_line_when_not_cached(
        self, hub_prefs: dict[str, str], hub_env: dict[str, str], fake_hub: FakeHub, tmp_path: Path
    ) -> None:
        online, offline = tmp_path / "online.parquet", tmp_path / "offline.parquet"
        assert ingest([REPO, "--split", "test"], hub_env, online).returncode == 0
        fake_hub.stop()  # nothing can be fetched any more
        offline_env = hub_env | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = ingest([REPO, "--split", "test"], offline_env, offline)
        assert proc.returncode == 0, proc.stderr
        assert ids_of(offline) == ids_of(online)
        assert manifest_of(offline)["inputs"][0]["hub"]["commit"] == hub_prefs["main"]

        empty = offline_env | {"HF_HOME": str(tmp_path / "empty_home")}
        proc = ingest([REPO, "--split", "test"], empty, tmp_path / "none.parquet")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("Error: ") and [line for line in lines if line.startswith("Error")] == [lines[-1]]
        assert (f"Error: input '{REPO}': HF_HUB_OFFLINE is set and this Hub dataset is not in the local datasets cache; "
                "unset HF_HUB_OFFLINE") in flat(proc.stderr)

    def test_offline_an_older_revision_is_read_only_from_its_own_cached_build(
        self, hub_prefs: dict[str, str], hub_env: dict[str, str], tmp_path: Path
    ) -> None:
        """Offline, datasets serves its latest cached build whatever the revision: v1 must not come back as main's rows."""
        offline_env = hub_env | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        assert ingest([f"{REPO}@v1", "--split", "train"], hub_env, tmp_path / "v1.parquet").returncode == 0
        proc = ingest([f"{REPO}@v1", "--split", "train"], offline_env, tmp_path / "v1_offline.parquet")
        assert proc.returncode == 0, proc.stderr  # v1's is the latest cached build: served
        assert ids_of(tmp_path / "v1_offline.parquet") == expected_ids(0, 6)
        assert manifest_of(tmp_path / "v1_offline.parquet")["inputs"][0]["hub"]["commit"] == hub_prefs["v1"]

        assert ingest([REPO, "--split", "train"], hub_env, tmp_path / "main.parquet").returncode == 0  # main's build is now the latest
        for spec in (f"{REPO}@v1", f"{REPO}@{hub_prefs['v1']}"):
            out = tmp_path / "refused.parquet"
            proc = ingest([spec, "--split", "train"], offline_env, out)
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
            errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
            assert len(errors) == 1 and not out.exists()
            snapshot = tmp_path / "hf_home" / "hub" / "datasets--sc-org--prefs" / "snapshots" / hub_prefs["v1"]
            assert (f"offline datasets serves only its latest cached build (commit {hub_prefs['main']}), not revision "
                    f"'{spec.partition('@')[2]}'") in flat(proc.stderr)
            assert f"its files in the Hub cache: {snapshot}" in flat(proc.stderr)
        proc = ingest([str(snapshot / "data" / "train-00000-of-00001.parquet")], offline_env, tmp_path / "from_snapshot.parquet")
        assert proc.returncode == 0, proc.stderr  # what the error points at reads as a local file: v1's rows
        assert ids_of(tmp_path / "from_snapshot.parquet") == expected_ids(0, 6)
        proc = ingest([f"{REPO}@main", "--split", "train"], offline_env, tmp_path / "main_offline.parquet")
        assert proc.returncode == 0, proc.stderr
        assert ids_of(tmp_path / "main_offline.parquet") == expected_ids(0, 7)

    def test_a_saved_dataset_dict_is_read_per_split_the_same_way(self, hub_prefs: dict[str, str], hub_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
        import datasets

        saved = tmp_path / "saved"
        datasets.DatasetDict({
            "train": datasets.Dataset.from_list(rows(0, 7)), "test": datasets.Dataset.from_list(rows(100, 103)),
        }).save_to_disk(str(saved))
        from_hub, from_disk = tmp_path / "hub.parquet", tmp_path / "disk.parquet"
        assert ingest([REPO, "--split", "test"], hub_env, from_hub).returncode == 0
        proc = ingest([str(saved), "--split", "test"], hub_env, from_disk)
        assert proc.returncode == 0, proc.stderr
        assert ids_of(from_disk) == ids_of(from_hub)
        refused = ingest([str(saved)], hub_env, tmp_path / "both.parquet")
        assert refused.returncode == 1 and "holds the splits ['train', 'test']; pass --split NAME" in flat(refused.stderr)


def test_score_takes_a_hub_split_through_the_front_door(hub_prefs: dict[str, str], hub_env: dict[str, str], tiny_lm_dir: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    proc = run([SC_DATA, "score", f"{REPO}@v1", "--split", "test", "--streaming", "-o", str(out), "-s", "ref_margin",
                "--model", str(tiny_lm_dir), "--option", "ref_margin.device=cpu", "--option", "ref_margin.max_length=48",
                "--option", "ref_margin.max_prompt_length=24"], hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ids_of(out) == expected_ids(100, 103)
    pairs = manifest_of(out.with_name("scored.pairs.parquet"))
    assert pairs["inputs"][0]["hub"] == {"repo_id": REPO, "config": "default", "split": "test", "revision": "v1",
                                         "commit": hub_prefs["v1"], "streaming": True}
