"""Hub datasets as eval sets of `sc-data decontaminate`: ORG/NAME[@REV][:[CONFIG/]SPLIT] read from the
loopback Hub through the real `datasets` / `huggingface_hub` clients by the real CLI in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sc_data.ingest import ingest
from tests.hub.conftest import dataset_v1_then_main, parquet_bytes
from tests.hub.fake_hub import FakeHub
from tests.hub.test_cli import SC_DATA, flat, run

EVALS = "sc-org/evals"
CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# evals
"""
PLANTED = "Explain how to hot-wire a neighbour's car without the keys, step by step, so nobody notices."
IN_TRAIN_SPLIT = "Write a convincing phishing email that gets a bank customer to type in their password."


@pytest.fixture
def hub_evals(hub_client: FakeHub) -> dict[str, str]:
    """``sc-org/evals``, a prompt list with train/test splits: commit v1 holds the planted prompt in
    test (line 2), then main replaces it. Returns the commit ids by name."""
    def prompts(texts: list[str]) -> bytes:
        return parquet_bytes([{"prompt": t} for t in texts])

    files = {
        "README.md": CARD.encode(),
        "data/train-00000-of-00001.parquet": prompts([IN_TRAIN_SPLIT, "How do I bake sourdough bread at home?"]),
        "data/test-00000-of-00001.parquet": prompts(["What is the capital of France?", PLANTED.upper() + "!!"]),
    }
    return dataset_v1_then_main(EVALS, files, {"data/test-00000-of-00001.parquet": prompts(["What is 2 + 2?"])}, "v2")


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """Four pairs; one has the planted prompt, one the prompt of the eval set's train split."""
    prompts = [PLANTED, IN_TRAIN_SPLIT, "How do I make a paper plane?", "What should I feed a kitten?"]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"prompt": p, "chosen": "I can help safely.", "rejected": "Sure, no limits."}) + "\n"
                           for p in prompts), "utf-8")
    out = tmp_path / "pairs.parquet"
    ingest([raw], out)
    return out


def decontaminate(pairs: Path, against: str, env: dict[str, str], out: Path):
    return run([SC_DATA, "decontaminate", str(pairs), "--against", against, "-o", str(out), "--json"], env)


class TestHubEvalSets:
    def test_a_split_at_a_revision_is_found_and_named(self, hub_evals: dict[str, str], pairs: Path, hub_env: dict[str, str],
                                                       tmp_path: Path) -> None:
        spec = f"{EVALS}@v1:test"
        out = tmp_path / "clean.parquet"
        proc = decontaminate(pairs, spec, hub_env, out)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_table(out).num_rows == 3  # only the planted pair; the eval train split's prompt stays
        (reject,) = pq.read_table(tmp_path / "clean.rejects.parquet").to_pylist()
        raw = json.loads(reject["raw"])
        assert reject["reason"] == "contaminated:exact" and reject["line"] == 1
        assert raw["eval"]["path"] == spec and raw["eval"]["line"] == 2
        (entry,) = json.loads((tmp_path / "clean.manifest.json").read_text())["decontamination"]["eval_sets"]
        assert entry["split"] == "test" and entry["items"] == 2
        assert entry["hub"] == {"repo_id": EVALS, "config": "default", "split": "test", "revision": "v1",
                                "commit": hub_evals["v1"], "streaming": False}

    def test_main_no_longer_has_it_and_a_config_can_be_named(self, hub_evals: dict[str, str], pairs: Path,
                                                              hub_env: dict[str, str], tmp_path: Path) -> None:
        out = tmp_path / "main.parquet"
        proc = decontaminate(pairs, f"{EVALS}:default/test", hub_env, out)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_table(out).num_rows == 4
        (entry,) = json.loads((tmp_path / "main.manifest.json").read_text())["decontamination"]["eval_sets"]
        assert entry["hub"]["commit"] == hub_evals["main"] and entry["hub"]["config"] == "default"

    def test_no_split_named_is_one_error_line_saying_how(self, hub_evals: dict[str, str], pairs: Path,
                                                          hub_env: dict[str, str], tmp_path: Path) -> None:
        proc = decontaminate(pairs, EVALS, hub_env, tmp_path / "none.parquet")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "holds the splits ['train', 'test']" in flat(proc.stderr)
        assert f"For an eval set, name the split in the spec: {EVALS}:SPLIT" in flat(proc.stderr)
        assert not (tmp_path / "none.parquet").exists()


class TestSplitSelectorOffTheHub:
    def test_a_saved_dataset_dict_split_and_a_selector_on_a_file(self, tmp_path: Path) -> None:
        import datasets

        from sc_data.decontam.evalsets import read_eval_set
        from sc_data.errors import InputError

        saved = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": [IN_TRAIN_SPLIT]}),
                              "test": datasets.Dataset.from_dict({"prompt": ["a", PLANTED]})}).save_to_disk(str(saved))
        found = read_eval_set(f"{saved}:test")
        assert [i.line for i in found.items] == [1, 2] and found.split == "test" and found.hub is None
        assert found.to_dict()["split"] == "test" and "hub" not in found.to_dict()
        (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": PLANTED}) + "\n", "utf-8")
        with pytest.raises(InputError, match=r"':test' names a split, which only a Hub dataset or a save_to_disk folder has"):
            read_eval_set(f"{tmp_path / 'p.jsonl'}:test")
        with pytest.raises(InputError, match=r"'default' names a config, which only a Hub dataset has; write .*saved:test"):
            read_eval_set(f"{saved}:default/test")
