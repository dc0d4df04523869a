"""Near-duplicate prompts grouped for the eval / dev split (StageConfig.near_duplicates)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.decontam.match import (
    ExactIndex,
    NgramIndex,
    near_duplicate_components,
    overlap_coefficient,
)
from sc_data.decontam.text import exact_key, prompt_turns, word_ngrams
from sc_data.ingest import ingest_tables
from sc_data.stage.config import StageConfig
from sc_data.stage.pipeline import stage
from sc_data.stage.plan import plan
from tests.stage.conftest import make_scored

WORDS = [f"w{i}" for i in range(5000)]


def _reference_components(items: list[tuple[str, ...]], n: int, threshold: float) -> list[set[int]]:
    """Every pair compared (quadratic), linked by equal exact key or overlap >= threshold, closed transitively."""
    grams = [word_ngrams(t, n) for t in items]
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in itertools.combinations(range(len(items)), 2):
        linked = exact_key(items[a]) == exact_key(items[b]) or (
            grams[a] and grams[b] and overlap_coefficient(len(grams[a] & grams[b]), len(grams[a]), len(grams[b])) >= threshold
        )
        if linked:
            parent[find(b)] = find(a)
    return _partition([find(k) for k in range(len(items))])


def _partition(labels) -> list[set[int]]:
    out: dict[int, set[int]] = {}
    for k, label in enumerate(labels):
        out.setdefault(int(label), set()).add(k)
    return sorted(out.values(), key=min)


class TestComponents:
    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.lists(st.sampled_from("a b c d e f".split()), min_size=0, max_size=9), min_size=1, max_size=14),
        st.sampled_from([2, 3]),
        st.sampled_from([0.3, 0.5, 0.6, 1.0]),
    )
    def test_same_partition_as_all_pairs(self, texts: list[list[str]], n: int, threshold: float) -> None:
        items = [prompt_turns(" ".join(words)) for words in texts]
        got = _partition(near_duplicate_components(items, n, threshold))
        assert got == _reference_components(items, n, threshold)


def _planted_table(rng: np.random.Generator, n_plain: int = 300) -> tuple[pa.Table, list[int]]:
    """Distinct 30-word prompts plus light edits of one of them; returns the table and the planted rows."""
    base = " ".join(rng.choice(WORDS, 30))
    words = base.split()
    edits = [
        base,
        base.upper() + "!!",                                   # case and punctuation
        base + " Please answer quickly.",                      # a sentence added (containment)
        " ".join(words[:-1] + ["zzz"]),                        # last word changed
        " ".join(words[:15] + ["yyy"] + words[16:]),           # a word changed in the middle (15/23 grams kept)
        "Hey. " + base,                                        # a greeting in front
    ]
    prompts = [" ".join(rng.choice(WORDS, 30)) for _ in range(n_plain)] + edits
    order = rng.permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    table = make_scored(len(prompts), seed=int(rng.integers(1 << 30)))
    column = pa.array([[{"role": "user", "content": p}] for p in prompts], table.schema.field("prompt").type)
    planted = sorted(int(np.flatnonzero(order == n_plain + k)[0]) for k in range(len(edits)))
    return table.set_column(table.schema.get_field_index("prompt"), "prompt", column), planted


class TestPlantedEdits:
    def test_edits_never_straddle_the_split_when_on_and_do_when_off(self) -> None:
        straddled_off = 0
        for seed in range(12):
            table, planted = _planted_table(np.random.default_rng(seed))
            on = plan(table, StageConfig(near_duplicates=0.6, dev_fraction=0.1, seed=seed))
            assert len(set(on.table.column("split").take(planted).to_pylist())) == 1
            assert on.near_duplicate_merges == 5
            off = plan(table, StageConfig(dev_fraction=0.1, seed=seed))
            straddled_off += len(set(off.table.column("split").take(planted).to_pylist())) > 1
            assert off.near_duplicate_merges is None
        assert straddled_off > 0

    def test_merges_recorded_in_the_staged_manifest(self, tmp_path: Path) -> None:
        table, _ = _planted_table(np.random.default_rng(0))
        stage(table, tmp_path / "on", near_duplicates=0.6, plots=False)
        manifest = json.loads((tmp_path / "on" / "sc_manifest.json").read_text("utf-8"))
        assert manifest["recipe"]["near_duplicate_merges"] == 5
        assert manifest["recipe"]["stage"]["near_duplicates"] == 0.6 and manifest["recipe"]["stage"]["near_duplicate_ngram"] == 8

    @pytest.mark.parametrize("value", [0.0, 1.5])
    def test_threshold_range(self, value: float) -> None:
        from sc_data.errors import ConfigError
        from sc_data.stage.config import make_config

        with pytest.raises(ConfigError, match=r"near_duplicates="):
            make_config(near_duplicates=value)


class TestPaperSet:
    def test_no_eval_prompt_matches_a_training_prompt(self, shared_data: Path) -> None:
        """With the option on, `decontaminate --against <the eval split>` would find nothing in training."""
        pairs, _ = ingest_tables([shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl"])
        assert pairs.num_rows == 3969
        scored = pairs.append_column("ref_margin__margin_mean", pa.array(np.random.default_rng(0).normal(size=pairs.num_rows)))

        def leaks(config: StageConfig) -> tuple[int, int | None]:
            result = plan(scored, config)
            split = np.asarray(result.table.column("split").to_pylist())
            prompts = [prompt_turns(p) for p in result.table.column("prompt").to_pylist()]
            held = [prompts[i] for i in np.flatnonzero(split == "eval")]
            exact, ngram = ExactIndex(held), NgramIndex(held, 8)
            found = sum(
                exact.best(prompts[i]) is not None or ((hit := ngram.best(prompts[i])) is not None and hit[1] >= 0.6)
                for i in np.flatnonzero(split == "train")
            )
            return found, result.near_duplicate_merges

        leaked_off, _ = leaks(StageConfig())
        leaked_on, merges = leaks(StageConfig(near_duplicates=0.6))
        assert leaked_on == 0 and merges is not None and merges > 0
        assert leaked_off > 0
