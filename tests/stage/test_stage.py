"""plan(): tiering, splits and budget together, property tests over random scored tables."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.errors import ConfigError, InputError
from sc_data.schema import normalised_prompt_key
from sc_data.stage.config import StageConfig, make_config
from sc_data.stage.plan import plan
from sc_data.stage.tiers import StagingWarning
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
        result = plan(table)
        assert result.table.filter(pa.array(result.keep)).num_rows == 48


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

    def test_threshold_column_must_exist(self) -> None:
        config = StageConfig(strategy="threshold", threshold_column="nope:easier", cuts=[1.0])
        with pytest.raises(ConfigError, match=r"threshold_column: difficulty column 'nope' is not in the table"):
            plan(make_scored(20, seed=14), config)

    def test_stratified_warnings_collected_not_emitted(self) -> None:
        table = make_scored(7, seed=4)
        config = StageConfig(strategy="quantile", cuts=[0.3, 0.8], stratify="category", eval_fraction=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", StagingWarning)
            result = plan(table, config)
        assert result.warnings and all(w.startswith("category '") for w in result.warnings)
        assert set(result.tier_edges) == set(table.column("category").fill_null("unknown").to_pylist())

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
            ({"strategy": "median"}, r"invalid staging config: strategy='median': Input should be 'equal', 'quantile', 'threshold' or 'kmeans'"),
            ({"tiers": 0}, r"tiers=0: Input should be greater than or equal to 1"),
            ({"bins": 3}, r"unknown staging option\(s\) \['bins'\]"),
        ],
    )
    def test_config_errors(self, options: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            make_config(**options)


def test_missing_canonical_columns() -> None:
    with pytest.raises(InputError, match=r"<table> lacks the canonical column\(s\)"):
        plan(pa.table({"ref_margin__margin_mean": [1.0]}))
