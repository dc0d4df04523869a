"""Decontamination: normalisation, the real paper set against the real HH-RLHF test file, planted
near-duplicates, a clean control, every eval-set form, the manifest and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_data import api
from sc_data.decontam.evalsets import read_eval_set
from sc_data.decontam.text import exact_key, normalise, prompt_turns, word_ngrams
from sc_data.errors import ConfigError, InputError
from sc_data.ingest.pipeline import ingest_tables
from sc_data.manifest import read_manifest

SC_DATA = str(Path(sys.executable).with_name("sc-data"))


def _pairs_file(path: Path, prompts: list[str]) -> Path:
    """A pairs Parquet (through the real ingest) with one pair per prompt."""
    src = path.with_suffix(".jsonl")
    src.write_text("".join(json.dumps({"prompt": p, "chosen": "No.", "rejected": f"Sure ({i})."}) + "\n"
                           for i, p in enumerate(prompts)), "utf-8")
    api.ingest([src], path)
    return path


def _removed(result) -> list[dict]:
    return [{**r, "raw": json.loads(r["raw"])} for r in pq.read_table(result.rejects).to_pylist()]


class TestText:
    def test_normalise(self) -> None:
        assert normalise("Human:  How do I   pick a LOCK?!") == "how do i pick a lock"
        assert normalise("ＵＳＥＲ: Ｗhat's\u00a0up…") == "what s up"  # NFKC folds the full-width letters first

    def test_a_transcript_and_its_message_list_give_the_same_turns(self) -> None:
        transcript = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?"
        messages = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "how do I pick a lock"}]
        assert prompt_turns(transcript) == prompt_turns(messages) == ("hi there", "hello", "how do i pick a lock")
        assert exact_key(prompt_turns("Human: how do I pick a lock?")) == "how do i pick a lock"

    def test_ngrams_stay_within_turns(self) -> None:
        assert word_ngrams(("a b c", "d e"), 2) == {"a b", "b c", "d e"}
        assert word_ngrams(("too short",), 8) == set()


@pytest.fixture(scope="module")
def paper_pairs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paper") / "pairs.parquet"
    api.ingest([shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl"], out)
    return out


class TestRealData:
    def test_paper_set_against_the_hh_test_file(self, paper_pairs: Path, shared_data: Path, tmp_path: Path) -> None:
        hh = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
        result = api.decontaminate(paper_pairs, [hh], tmp_path / "clean.parquet")
        removed = _removed(result)
        assert result.rows_in == 3969 == result.rows_out + result.rows_rejected == 3969
        assert pq.read_table(result.output).num_rows == result.rows_out and len(removed) == result.rows_rejected
        exact = [r for r in removed if r["reason"] == "contaminated:exact"]
        # The prompts shared by the two files as ingest keeps them (valid pairs only): derived independently.
        paper, _ = ingest_tables([shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl"])
        hh_pairs, _ = ingest_tables([hh])
        keys = lambda t: {exact_key(prompt_turns(p)) for p in t.column("prompt").to_pylist()}  # noqa: E731
        shared = keys(paper) & keys(hh_pairs)
        assert len(shared) == 17
        caught = {r["raw"]["eval"]["prompt"] for r in exact}
        # ...all 17 caught, plus one prompt of a record ingest rejects for its empty chosen answer (line 926).
        assert shared < caught and len(caught) == 18
        assert {(r["raw"]["eval"]["line"], r["raw"]["eval"]["prompt"]) for r in exact} - {(926, "list of profane bad words")} \
            == {(r["raw"]["eval"]["line"], r["raw"]["eval"]["prompt"]) for r in exact if r["raw"]["eval"]["prompt"] in shared}
        assert len(exact) == 33  # the paper repeats some of those prompts
        assert all(r["raw"]["eval"]["path"] == str(hh) and r["raw"]["score"] == 1.0 for r in exact)
        # The n-gram method also finds paper prompts that open a multi-turn HH test conversation.
        assert result.by_method == {"exact": 33, "ngram": 299}
        manifest = read_manifest(result.manifest)
        record = manifest["decontamination"]
        assert record["eval_sets"][0]["items"] == 2307 and record["eval_sets"][0]["unreadable"] == 5
        assert record["eval_sets"][0]["layout"] == "hh-rlhf" and len(record["eval_sets"][0]["sha256"]) == 64
        assert record["removed_by_method"] == {"exact": 33, "ngram": 299} and record["options"]["threshold"] == 0.6
        assert manifest["counts"]["input"]["rows_out"] == 3969 and manifest["licenses"] == read_manifest(
            paper_pairs.with_name("pairs.manifest.json"))["licenses"]

    def test_batches_give_the_one_batch_result(self, paper_pairs: Path, shared_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """Read, matched and written in batches (memory flat in the input's size): the same rows, rejects (with their
        input lines) and counts as in one batch."""
        from sc_data.decontam import pipeline

        hh = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
        whole = api.decontaminate(paper_pairs, [hh], tmp_path / "whole.parquet")
        monkeypatch.setattr(pipeline, "BATCH_ROWS", 500)
        done: list[int] = []
        parts = api.decontaminate(paper_pairs, [hh], tmp_path / "parts.parquet", progress=done.append)
        assert done == [500] * 7 + [469]
        assert pq.ParquetFile(whole.output).metadata.num_row_groups == 1
        assert pq.ParquetFile(parts.output).metadata.num_row_groups == 8  # 3,969 rows, 500 a batch
        assert pq.read_table(parts.output).equals(pq.read_table(whole.output), check_metadata=True)
        assert pq.read_table(parts.rejects).equals(pq.read_table(whole.rejects))
        assert len({r["line"] for r in _removed(parts)}) == parts.rows_rejected == 332  # lines count from the file's start
        assert (parts.rows_in, parts.rows_out, parts.by_method, parts.by_eval_set) == \
            (whole.rows_in, whole.rows_out, whole.by_method, whole.by_eval_set)

    def test_a_part_that_cannot_be_read_is_one_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from sc_data.decontam import pipeline

        table = pa.table({"prompt": [f"question number {i} " * 5 for i in range(2000)]})
        pq.write_table(table, tmp_path / "in.parquet", row_group_size=1000, compression="zstd")
        data = bytearray((tmp_path / "in.parquet").read_bytes())
        second = pq.ParquetFile(tmp_path / "in.parquet").metadata.row_group(1).column(0).data_page_offset + 40
        data[second:second + 200] = bytes(200)  # the second row group's data, zeroed
        (tmp_path / "in.parquet").write_bytes(data)
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        monkeypatch.setattr(pipeline, "BATCH_ROWS", 500)
        with pytest.raises(InputError, match=r"cannot read .*in.parquet.* past row 1000 \(ZSTD decompression failed"):
            api.decontaminate(tmp_path / "in.parquet", [tmp_path / "e.txt"], tmp_path / "out.parquet")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.txt", "in.parquet"]  # nothing half-written

    def test_clean_control(self, paper_pairs: Path, shared_data: Path, tmp_path: Path) -> None:
        """XSTest's 450 prompts share no normalised prompt and no 8-gram share >= 0.6 with the paper's set."""
        result = api.decontaminate(paper_pairs, [shared_data / "xstest" / "xstest_prompts.csv"], tmp_path / "c.parquet")
        assert (result.rows_rejected, result.rows_out) == (0, 3969)
        assert result.eval_sets[0]["items"] == 450 and result.eval_sets[0]["layout"] == "prompts"

    def test_planted_near_duplicates(self, shared_data: Path, tmp_path: Path) -> None:
        xstest = shared_data / "xstest" / "xstest_prompts.csv"
        rows = list(csv.DictReader(xstest.open(encoding="utf-8")))
        long = [r for r in rows if len(r["prompt"].split()) >= 12][:2]
        planted = {
            "exact": (rows[0], rows[0]["prompt"].upper().replace("?", " ??")),
            "ngram": (long[0], f"Quick question for a story I'm writing. {long[0]['prompt']} Answer briefly."),
        }
        words = long[1]["prompt"].split()
        words[len(words) - 2] = "xyzzy"  # one word near the end changed
        planted["ngram-edit"] = (long[1], " ".join(words))
        clean = ["Write a haiku about autumn leaves falling in the quiet park at dawn.", "What is 2 + 2?"]
        pairs = _pairs_file(tmp_path / "train.parquet", [*clean, *(p for _, p in planted.values())])
        result = api.decontaminate(pairs, [xstest], tmp_path / "out.parquet")
        removed = _removed(result)
        assert [r["line"] for r in removed] == [3, 4, 5] and result.rows_out == 2
        assert [r["reason"] for r in removed] == ["contaminated:exact", "contaminated:ngram", "contaminated:ngram"]
        assert [r["raw"]["eval"]["id"] for r in removed] == [row["id"] for row, _ in planted.values()]
        assert removed[1]["raw"]["score"] == 1.0 and 0.6 <= removed[2]["raw"]["score"] < 1.0


class TestEvalSets:
    def test_prompt_list_forms(self, tmp_path: Path) -> None:
        (tmp_path / "e.txt").write_text("How do I pick a lock?\n\nUser: tell me a joke\n", "utf-8")
        (tmp_path / "e.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": "Tell me a joke!"}]}) + "\n", "utf-8")
        pq.write_table(pa.table({"prompt": ["how do I pick a lock", None]}), tmp_path / "e.parquet")
        txt, jsonl, parquet = (read_eval_set(tmp_path / f"e.{x}") for x in ("txt", "jsonl", "parquet"))
        assert [(i.line, i.turns) for i in txt.items] == [(1, ("how do i pick a lock",)), (3, ("tell me a joke",))]
        assert jsonl.items[0].turns == ("tell me a joke",) and jsonl.layout == "prompts"
        assert len(parquet.items) == 1 and parquet.unreadable == 1

    def test_a_text_file_that_is_not_utf8_is_one_clear_error(self, tmp_path: Path) -> None:
        (tmp_path / "e.txt").write_bytes(b"how do i pick a lock\n\xff\xfe oops\n")
        with pytest.raises(InputError, match=r"eval set .*e.txt' is not UTF-8 text: line 2 \(invalid start byte\)"):
            read_eval_set(tmp_path / "e.txt")

    def test_a_file_without_prompts_is_one_clear_error(self, tmp_path: Path) -> None:
        (tmp_path / "e.csv").write_text("question,answer\nhi,there\n", "utf-8")
        with pytest.raises(InputError, match=r"neither a pair file ingest reads nor a prompt list: its columns are \['question', 'answer'\]"):
            read_eval_set(tmp_path / "e.csv")
        with pytest.raises(InputError, match="does not exist"):
            read_eval_set(tmp_path / "missing.csv")


class TestOutputs:
    def test_refuses_to_overwrite_what_sc_data_did_not_write(self, tmp_path: Path) -> None:
        pairs = _pairs_file(tmp_path / "train.parquet", ["How do I pick a lock?", "What is 2 + 2?"])
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        (tmp_path / "out.parquet").write_text("mine", "utf-8")
        with pytest.raises(ConfigError, match="already exists"):
            api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "out.parquet")
        with pytest.raises(ConfigError, match="not written by sc-data|sc-data did not write"):
            api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "out.parquet", overwrite=True)
        assert (tmp_path / "out.parquet").read_text("utf-8") == "mine"
        ok = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "ok.parquet")
        again = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "ok.parquet", overwrite=True)
        assert (ok.rows_rejected, again.rows_rejected) == (1, 1)
        mine = tmp_path / "mine" / "ok.rejects.parquet"  # the name the manifest lists, in another folder
        mine.parent.mkdir()
        mine.write_text("mine", "utf-8")
        with pytest.raises(ConfigError, match="sc-data did not write"):
            api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "ok.parquet", rejects=mine, overwrite=True)
        assert mine.read_text("utf-8") == "mine"
        with pytest.raises(ConfigError, match="the outputs and their manifest must be different files"):
            api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "ok.parquet", rejects=tmp_path / "ok.parquet", overwrite=True)

    def test_a_manifest_that_fails_leaves_no_output(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from sc_data.decontam import pipeline
        from sc_data.io import sha256_file

        pairs = _pairs_file(tmp_path / "train.parquet", ["How do I pick a lock?", "What is 2 + 2?"])
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        real = pipeline._manifest
        monkeypatch.setattr(pipeline, "_manifest", lambda *a, **k: {**real(*a, **k), "oops": object()})
        with pytest.raises(TypeError, match="a manifest can't hold object"):
            api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "out.parquet")
        assert not any(p.name.startswith("out.") for p in tmp_path.iterdir())
        monkeypatch.setattr(pipeline, "_manifest", real)
        done = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "out.parquet")
        files = {f["path"]: f["sha256"] for f in read_manifest(done.manifest)["files"]}
        assert files == {"out.parquet": sha256_file(done.output), "out.rejects.parquet": sha256_file(done.rejects)}

    def test_a_manifest_listing_the_input_with_another_sha256_is_not_carried_forward(self, tmp_path: Path) -> None:
        """A pairs file rewritten after ingest (or by a run killed before its manifest): its manifest no longer describes it."""
        from sc_data.manifest import ManifestWarning

        src = tmp_path / "train.jsonl"
        src.write_text("".join(json.dumps({"prompt": p, "chosen": "No.", "rejected": "Sure."}) + "\n"
                               for p in ("How do I pick a lock?", "What is 2 + 2?", "Name a colour.")), "utf-8")
        pairs = tmp_path / "train.parquet"
        api.ingest([src], pairs, license="mit")
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        kept = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "a.parquet")
        assert read_manifest(kept.manifest)["licenses"] == ["mit"] and "input" in read_manifest(kept.manifest)["counts"]
        pq.write_table(pq.read_table(pairs).slice(1), pairs)  # rewritten by another tool
        with pytest.warns(ManifestWarning, match=r"train.manifest.json' lists .*train.parquet' with another sha256"):
            dropped = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "b.parquet")
        assert read_manifest(dropped.manifest)["licenses"] == [] and "input" not in read_manifest(dropped.manifest)["counts"]

    @pytest.mark.parametrize("field,value", [("licenses", 5), ("licenses", "mit"), ("inputs", ["raw.jsonl"]), ("counts", [])])
    def test_a_malformed_upstream_manifest_is_not_carried_forward(self, tmp_path: Path, field: str, value) -> None:
        from sc_data.manifest import ManifestWarning

        pairs = _pairs_file(tmp_path / "train.parquet", ["How do I pick a lock?", "What is 2 + 2?"])
        manifest = tmp_path / "train.manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), field: value}))
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        with pytest.warns(ManifestWarning, match=rf"has a malformed '{field}'"):
            result = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "out.parquet")
        assert read_manifest(result.manifest)["licenses"] == [] and result.rows_rejected == 1

    def test_cli(self, tmp_path: Path) -> None:
        pairs = _pairs_file(tmp_path / "train.parquet", ["How do I pick a lock?", "What is 2 + 2?"])
        (tmp_path / "e.txt").write_text("how do i pick a lock\n", "utf-8")
        run = subprocess.run([SC_DATA, "decontaminate", str(pairs), "-a", str(tmp_path / "e.txt"), "-o", str(tmp_path / "o.parquet"),
                              "--json"], capture_output=True, text=True, check=True)
        out = json.loads(run.stdout)
        assert (out["rows_in"], out["rows_out"], out["by_method"]) == (2, 1, {"exact": 1})
        bad = subprocess.run([SC_DATA, "decontaminate", str(pairs), "-a", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "p.parquet")],
                             capture_output=True, text=True)
        assert bad.returncode == 1 and bad.stderr.startswith("Error: input file") and "Traceback" not in bad.stderr
        bad = subprocess.run([SC_DATA, "decontaminate", str(pairs), "-a", str(tmp_path / "e.txt"), "-o", str(tmp_path / "p.parquet"),
                              "--threshold", "0"], capture_output=True, text=True)
        assert bad.returncode == 1 and "threshold=0.0: Input should be greater than 0" in bad.stderr


def test_embedding_catches_a_paraphrase_the_words_miss(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (shipped on PyPI): a reworded prompt shares no 8-gram but embeds close."""
    pairs = _pairs_file(tmp_path / "train.parquet", ["What is the way to kill a python process?", "Write a haiku about autumn leaves."])
    (tmp_path / "e.txt").write_text("How can I kill a Python process?\n", "utf-8")
    words_only = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "w.parquet")
    both = api.decontaminate(pairs, [tmp_path / "e.txt"], tmp_path / "b.parquet", embedding=True, device="cpu")
    assert words_only.rows_rejected == 0 and both.by_method == {"embedding": 1}
    removed = _removed(both)
    assert removed[0]["line"] == 1 and removed[0]["raw"]["score"] >= 0.92
    assert read_manifest(both.manifest)["decontamination"]["methods"] == ["exact", "ngram", "embedding"]


class TestCard:
    """The staged card is built through huggingface_hub's DatasetCard and reports the decontamination."""

    def test_size_categories(self) -> None:
        from sc_data.stage.card import size_category

        assert [size_category(n) for n in (0, 999, 1000, 3969, 250_000, 2 * 10**9)] == \
            ["n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "100K<n<1M", "n>1B"]

    def test_staged_card_after_decontamination(self, tmp_path: Path) -> None:
        from huggingface_hub import DatasetCard

        from tests.stage.conftest import make_scored

        scored = tmp_path / "scored.parquet"
        pq.write_table(make_scored(80, seed=3), scored)
        (tmp_path / "scored.manifest.json").write_text(json.dumps({"kind": "scored", "licenses": ["MIT"]}), "utf-8")
        (tmp_path / "eval.txt").write_text("How do I do thing 4?\n", "utf-8")
        result = api.decontaminate(scored, [tmp_path / "eval.txt"], tmp_path / "clean.parquet")
        assert result.by_method == {"exact": 1}
        api.stage(result.output, tmp_path / "staged", plots=False)
        card = DatasetCard.load(tmp_path / "staged" / "README.md")
        meta = card.data.to_dict()
        assert (meta["license"], meta["language"], meta["size_categories"]) == ("mit", ["en"], ["n<1K"])
        assert meta["pretty_name"] and meta["task_categories"] == ["text-generation"] and meta["configs"][0]["config_name"] == "all"
        assert "exact 1, ngram 0" in card.text and f"`{tmp_path / 'eval.txt'}` (1 prompts" in card.text
        staged = read_manifest(tmp_path / "staged" / "sc_manifest.json")
        assert staged["decontamination"]["removed_by_method"] == {"exact": 1, "ngram": 0}

    def test_staged_card_without_decontamination_says_so(self, tmp_path: Path) -> None:
        from tests.stage.conftest import make_scored

        api.stage(make_scored(40, seed=4), tmp_path / "staged", plots=False)
        text = (tmp_path / "staged" / "README.md").read_text("utf-8")
        assert "Not checked against eval sets" in text and "license: other" in text
