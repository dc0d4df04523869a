"""Tiering, splits and budget: property tests over random scored tables, plus the Tierer."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.errors import ConfigError, InputError
from sc_data.schema import normalised_prompt_key
from sc_data.stage import (
    StageConfig,
    StagingWarning,
    Tierer,
    assign,
    make_config,
    plan,
    prompt_group_codes,
)
from tests.stage.conftest import make_scored


def tier_parts(result) -> list[np.ndarray]:
    return [result.parts[f"tier_{k}"] for k in range(result.n_tiers)]


@st.composite
def staging_case(draw):
    n = draw(st.integers(1, 90))
    table = make_scored(n, seed=draw(st.integers(0, 10_000)), n_prompts=draw(st.integers(1, n)))
    config = StageConfig(
        tiers=draw(st.integers(1, 5)),
        eval_fraction=draw(st.sampled_from([0.0, 0.2, 0.5])),
        dev_fraction=draw(st.sampled_from([0.0, 0.1])),
        stratify=draw(st.sampled_from(["none", "category"])),
        seed=draw(st.integers(0, 3)),
    )
    return table, config


class TestTieringProperties:
    @settings(max_examples=60, deadline=None)
    @given(staging_case())
    def test_invariants(self, case) -> None:
        table, config = case
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StagingWarning)
            result = plan(table, config)
        n = table.num_rows
        staged = result.table
        tier = staged.column("tier").to_numpy(zero_copy_only=False)
        split = np.array(staged.column("split").to_pylist(), dtype=object)
        difficulty = staged.column("difficulty").to_numpy()

        # Every kept row is in exactly one part; train rows in exactly one tier, the right one.
        every = np.concatenate(list(result.parts.values()))
        assert len(every) == len(np.unique(every)) == result.keep.sum() == n
        for k, rows in enumerate(tier_parts(result)):
            assert (tier[rows] == k).all() and (split[rows] == "train").all()
        assert (split[result.parts["eval"]] == "eval").all()
        assert np.isnan(tier[split != "train"].astype(float)).all()

        sizes = [len(p) for p in tier_parts(result)]
        k = config.tiers
        if config.stratify == "none":
            n_train = sum(sizes)
            assert sizes == [n_train // k] * (k - 1) + [n_train - (k - 1) * (n_train // k)]
            # Tiers ordered by difficulty: max of tier k <= min of tier k+1.
            nonempty = [difficulty[p] for p in tier_parts(result) if len(p)]
            for lower, upper in zip(nonempty, nonempty[1:], strict=False):
                assert lower.max() <= upper.min()
        else:
            cats = np.array(staged.column("category").fill_null("unknown").to_pylist())
            for cat in np.unique(cats):
                counts = [int((cats[p] == cat).sum()) for p in tier_parts(result)]
                assert max(counts) - min(counts) <= 1, (cat, counts)

        # No prompt (normalised) on both sides of the eval split.
        keys = [normalised_prompt_key(p) for p in staged.column("prompt").to_pylist()]
        eval_keys = {keys[i] for i in result.parts["eval"]}
        other_keys = {keys[i] for i in range(n) if split[i] != "eval"}
        assert not eval_keys & other_keys

        # Same seed, same result.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StagingWarning)
            again = plan(table, config)
        assert all(np.array_equal(result.parts[p], again.parts[p]) for p in result.parts)


class TestSplits:
    def test_paper_defaults(self) -> None:
        table = make_scored(1000, seed=5)
        result = plan(table)
        assert result.n_tiers == 3
        assert len(result.parts["eval"]) == 200
        assert [len(p) for p in tier_parts(result)] == [266, 266, 268]

    def test_eval_stratified_by_quartile_and_category(self) -> None:
        table = make_scored(2000, seed=6)
        result = plan(table, StageConfig(eval_fraction=0.2))
        staged = result.table
        difficulty = staged.column("difficulty").to_numpy()
        quartile = np.minimum(np.floor(difficulty * 4), 3)
        cats = np.array(staged.column("category").fill_null("unknown").to_pylist())
        is_eval = np.zeros(table.num_rows, dtype=bool)
        is_eval[result.parts["eval"]] = True
        for cat in np.unique(cats):
            for q in range(4):
                members = (cats == cat) & (quartile == q)
                expected = 0.2 * members.sum()
                assert abs(is_eval[members].sum() - expected) <= 1.0, (cat, q)

    def test_dev_split_from_training(self) -> None:
        table = make_scored(500, seed=7)
        result = plan(table, StageConfig(dev_fraction=0.1))
        assert len(result.parts["eval"]) == 100
        assert len(result.parts["dev"]) == 50
        assert sum(len(p) for p in tier_parts(result)) == 350

    def test_fraction_sum_must_stay_below_one(self) -> None:
        with pytest.raises(ConfigError, match=r"eval_fraction \+ dev_fraction must be < 1, got 0.6 \+ 0.4"):
            make_config(eval_fraction=0.6, dev_fraction=0.4)


class TestBudget:
    def test_uniform_within_tiers(self) -> None:
        table = make_scored(400, seed=8)
        full = plan(table, StageConfig(eval_fraction=0.0))
        cut = plan(table, StageConfig(eval_fraction=0.0, budget=0.75))
        for k in range(3):
            assert len(cut.parts[f"tier_{k}"]) == round(0.75 * len(full.parts[f"tier_{k}"]))
            assert set(cut.parts[f"tier_{k}"]) <= set(full.parts[f"tier_{k}"])
        assert cut.rejects.num_rows == 400 - sum(len(p) for p in tier_parts(cut))
        assert set(cut.rejects.column("reason").to_pylist()) == {"budget:uniform"}

    @pytest.mark.parametrize("mode", ["easiest", "hardest"])
    def test_ends(self, mode: str) -> None:
        table = make_scored(400, seed=9)
        result = plan(table, StageConfig(eval_fraction=0.0, budget=0.5, budget_mode=mode))
        difficulty = result.table.column("difficulty").to_numpy()
        kept = np.concatenate(tier_parts(result))
        dropped = result.rejects.column("line").to_numpy()
        assert len(kept) == 200 and len(dropped) == 200
        if mode == "easiest":
            assert difficulty[kept].max() <= difficulty[dropped].min()
        else:
            assert difficulty[kept].min() >= difficulty[dropped].max()


class TestMissingScores:
    def test_dropped_rows_go_to_rejects(self) -> None:
        table = make_scored(50, seed=10)
        margin = table.column("ref_margin__margin_mean").to_pylist()
        margin[3] = None
        margin[7] = None
        table = table.set_column(table.column_names.index("ref_margin__margin_mean"), "ref_margin__margin_mean", pa.array(margin, pa.float64()))
        result = plan(table, source="scored.parquet")
        rejects = result.rejects.to_pylist()
        assert [(r["line"], r["reason"], r["field"], r["source_file"]) for r in rejects] == [
            (3, "missing_score:ref_margin__margin_mean", "ref_margin__margin_mean", "scored.parquet"),
            (7, "missing_score:ref_margin__margin_mean", "ref_margin__margin_mean", "scored.parquet"),
        ]
        assert rejects[0]["raw"] == table.column("id")[3].as_py()
        assert result.keep.sum() + len(rejects) == 50
        assert assign(table).num_rows == 48


class TestStrategies:
    def test_quantile(self) -> None:
        result = plan(make_scored(300, seed=11), StageConfig(strategy="quantile", cuts=[0.5, 0.9], eval_fraction=0))
        assert [len(p) for p in tier_parts(result)] == [150, 120, 30]

    def test_threshold_direction(self) -> None:
        table = make_scored(200, seed=12)
        result = plan(table, StageConfig(strategy="threshold", threshold_column="judge__severity", cuts=[1, 3], eval_fraction=0))
        severity = result.table.column("judge__severity").to_numpy()
        # judge__severity: larger is easier, so severity 3 -> tier 0, 1..2 -> tier 1, 0 -> tier 2.
        assert set(severity[result.parts["tier_0"]]) == {3}
        assert set(severity[result.parts["tier_1"]]) == {1, 2}
        assert set(severity[result.parts["tier_2"]]) == {0}

    def test_kmeans_renumbered_by_difficulty(self) -> None:
        result = plan(make_scored(300, seed=13), StageConfig(strategy="kmeans", tiers=4, eval_fraction=0))
        difficulty = result.table.column("difficulty").to_numpy()
        means = [difficulty[p].mean() for p in tier_parts(result)]
        assert means == sorted(means) and result.n_tiers == 4

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"strategy": "quantile"}, r"strategy='quantile' needs cuts"),
            ({"strategy": "quantile", "cuts": [0.5, 0.2]}, r"cuts must be strictly increasing, got \[0.5, 0.2\]"),
            ({"strategy": "quantile", "cuts": [0.5, 1.5]}, r"quantile cuts must lie in \(0, 1\)"),
            ({"strategy": "quantile", "cuts": [0.5], "tiers": 4}, r"tiers=4 contradicts 1 cuts"),
            ({"strategy": "threshold", "cuts": [1.0]}, r"needs threshold_column"),
            ({"strategy": "kmeans", "stratify": "category"}, r"stratify='category' applies to strategies 'equal' and 'quantile'"),
            ({"cuts": [0.5]}, r"cuts apply to strategy 'quantile' or 'threshold', not 'equal'"),
            ({"strategy": "median"}, r"strategy: Input should be 'equal', 'quantile', 'threshold' or 'kmeans' \(got 'median'\)"),
            ({"tiers": 0}, r"tiers: Input should be greater than or equal to 1 \(got 0\)"),
            ({"bins": 3}, r"unknown staging option\(s\) \['bins'\]"),
        ],
    )
    def test_config_errors(self, options: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            make_config(**options)


class TestTierer:
    def test_transform_needs_fit(self) -> None:
        with pytest.raises(ConfigError, match=r"this Tierer is not fitted yet; call fit\(\) before transform\(\)"):
            Tierer().transform(np.array([0.1]))

    def test_fit_then_transform_new_values(self) -> None:
        tierer = Tierer("equal", n_tiers=3).fit(np.linspace(0, 1, 9))
        np.testing.assert_allclose(tierer.tier_edges_, [0.0, 0.375, 0.75, 1.0])
        assert tierer.transform(np.array([0.0, 0.374, 0.375, 0.8, 2.0])).tolist() == [0, 0, 1, 2, 2]

    def test_constant_scores_warn(self) -> None:
        with pytest.warns(StagingWarning, match=r"all 6 difficulty values are equal \(0.5\); the tiers carry no difficulty signal"):
            tiers = Tierer("equal", n_tiers=3).fit_transform(np.full(6, 0.5))
        assert sorted(tiers.tolist()) == [0, 0, 1, 1, 2, 2]

    def test_kmeans_too_few_distinct_values(self) -> None:
        with pytest.warns(StagingWarning, match=r"only 2 distinct difficulty values for 3 k-means tiers; using 2"):
            tierer = Tierer("kmeans", n_tiers=3)
            tiers = tierer.fit_transform(np.array([0.0, 0.0, 1.0, 1.0]))
        assert tiers.tolist() == [0, 0, 1, 1] and tierer.n_tiers_ == 2

    def test_too_few_rows_warn(self) -> None:
        with pytest.warns(StagingWarning, match=r"only 2 training rows for 3 tiers"):
            Tierer("equal", n_tiers=3).fit_transform(np.array([0.1, 0.2]))


class TestPromptGroups:
    def reference_codes(self, prompts) -> np.ndarray:
        keys = [normalised_prompt_key(p) for p in prompts]
        index: dict[str, int] = {}
        return np.array([index.setdefault(k, len(index)) for k in keys])

    def assert_same_partition(self, prompts) -> None:
        got = prompt_group_codes(pa.array(prompts, pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))))
        ref = self.reference_codes(prompts)
        # Same partition: a bijection between the two labelings.
        pairs = set(zip(got.tolist(), ref.tolist(), strict=True))
        assert len(pairs) == len(set(got.tolist())) == len(set(ref.tolist()))

    @settings(max_examples=80, deadline=None)
    @given(
        st.lists(
            st.lists(
                st.tuples(
                    st.sampled_from(["user", "assistant"]),
                    st.text(alphabet=st.sampled_from(list("aAbB É\u00e9e\u0301\t\n\x0b\x1c\u00a0\u2003\u3000")), max_size=6),
                ),
                min_size=1,
                max_size=2,
            ),
            min_size=1,
            max_size=12,
        )
    )
    def test_matches_normalised_prompt_key(self, raw) -> None:
        self.assert_same_partition([[{"role": r, "content": c} for r, c in msgs] for msgs in raw])

    def test_real_data(self, shared_data: Path) -> None:
        prompts = []
        with open(shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl", encoding="utf-8") as fh:
            for line in fh:
                prompts.append([{"role": "user", "content": json.loads(line)["prompt"].removeprefix("Human: ")}])
        with gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["chosen"].rsplit("\n\nAssistant:", 1)[0]
                prompts.append([{"role": "user", "content": text}])
        self.assert_same_partition(prompts)
        # The paper's set repeats some prompts (DESIGN.md: 30 occur more than once).
        codes = prompt_group_codes(pa.array(prompts[:3969]))
        assert len(np.unique(codes)) < 3969


def test_missing_canonical_columns() -> None:
    with pytest.raises(InputError, match=r"<table> lacks the canonical column\(s\)"):
        plan(pa.table({"ref_margin__margin_mean": [1.0]}))
