"""Difficulty: rank percentiles checked against a straightforward per-row float64 reference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.errors import ConfigError
from sc_data.stage.difficulty import (
    DifficultyColumn,
    compute_difficulty,
    grouped_percentile,
    resolve_columns,
)
from tests.stage.conftest import make_scored


def reference_percentile(values: list[float], groups: list[int]) -> list[float]:
    """Average 0-based rank within the group over (group size - 1), one row at a time."""
    out = []
    for i, v in enumerate(values):
        peers = [values[j] for j in range(len(values)) if groups[j] == groups[i]]
        less = sum(1 for p in peers if p < v)
        equal = sum(1 for p in peers if p == v)
        rank = less + (equal - 1) / 2.0
        out.append(rank / max(len(peers) - 1, 1))
    return out


def reference_difficulty(table: pa.Table, specs: list[tuple[str, str, float]], per_category: bool) -> list[float]:
    n = table.num_rows
    cats = table.column("category").to_pylist()
    groups = [hash(c) for c in cats] if per_category else [0] * n
    combined = [0.0] * n
    for column, direction, weight in specs:
        raw = [float(v) for v in table.column(column).to_pylist()]
        oriented = [-v for v in raw] if direction == "larger_is_easier" else raw
        pct = reference_percentile(oriented, groups)
        combined = [c + weight * p for c, p in zip(combined, pct, strict=True)]
    total = sum(w for _, _, w in specs)
    return reference_percentile([c / total for c in combined], groups)


class TestGroupedPercentile:
    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 2)), min_size=1, max_size=40),
    )
    def test_matches_reference(self, rows: list[tuple[int, int]]) -> None:
        values = [float(v) for v, _ in rows]
        groups = [g for _, g in rows]
        got = grouped_percentile(np.array(values), np.array(groups))
        np.testing.assert_allclose(got, reference_percentile(values, groups), rtol=0, atol=1e-12)

    def test_ties_get_equal_percentiles(self) -> None:
        np.testing.assert_allclose(grouped_percentile(np.array([5.0, 1.0, 5.0, 3.0])), [5 / 6, 0.0, 5 / 6, 1 / 3])

    def test_empty_and_single(self) -> None:
        assert grouped_percentile(np.array([])).shape == (0,)
        np.testing.assert_allclose(grouped_percentile(np.array([7.0])), [0.0])


class TestComputeDifficulty:
    @pytest.mark.parametrize("per_category", [False, True])
    def test_matches_reference(self, per_category: bool) -> None:
        table = make_scored(57, seed=3)
        specs = [("ref_margin__margin_mean", "larger_is_easier", 1.0), ("judge__severity", "larger_is_easier", 2.5)]
        columns = [DifficultyColumn(column=c, direction=d, weight=w) for c, d, w in specs]
        result = compute_difficulty(table, columns, per_category=per_category)
        expected = reference_difficulty(table, specs, per_category)
        np.testing.assert_allclose(result.difficulty, expected, rtol=0, atol=1e-12)
        assert result.keep.all()

    def test_larger_is_harder_reverses(self) -> None:
        table = pa.table({"x__y": [1.0, 2.0, 3.0]})
        easier = compute_difficulty(table, [DifficultyColumn(column="x__y", direction="larger_is_easier")])
        harder = compute_difficulty(table, [DifficultyColumn(column="x__y", direction="larger_is_harder")])
        np.testing.assert_allclose(easier.difficulty, [1.0, 0.5, 0.0])
        np.testing.assert_allclose(harder.difficulty, [0.0, 0.5, 1.0])

    def test_builtins_found_by_default(self) -> None:
        table = make_scored(10, scores=("ref_margin__margin_mean", "similarity__margin"))
        result = compute_difficulty(table)
        assert [c.column for c in result.columns] == ["ref_margin__margin_mean", "similarity__margin"]
        assert {c.direction for c in result.columns} == {"larger_is_easier"}

    def test_no_known_column_lists_columns(self) -> None:
        table = pa.table({"id": ["a"], "mystery__score": [1.0]})
        with pytest.raises(ConfigError, match=r"no known difficulty column in the table; it has \['id', 'mystery__score'\]"):
            compute_difficulty(table)

    def test_user_column_needs_direction(self) -> None:
        with pytest.raises(ConfigError, match=r"'mystery__score' has no known direction; name it as mystery__score:easier"):
            resolve_columns(["mystery__score"], [DifficultyColumn(column="mystery__score")])

    def test_absent_column(self) -> None:
        with pytest.raises(ConfigError, match=r"difficulty column 'nope__x' is not in the table"):
            resolve_columns(["a__b"], [DifficultyColumn.parse("nope__x:easier")])

    def test_non_numeric_column(self) -> None:
        table = pa.table({"x__y": ["a", "b"]})
        with pytest.raises(ConfigError, match=r"'x__y' has type string; a difficulty column must be numeric"):
            compute_difficulty(table, [DifficultyColumn(column="x__y", direction="larger_is_easier")])


class TestMissing:
    def table(self) -> pa.Table:
        return pa.table(
            {
                "ref_margin__margin_mean": [3.0, None, 1.0, 2.0, float("nan")],
                "ref_margin__error": [None, None, "too long", None, None],
            }
        )

    def test_drop(self) -> None:
        result = compute_difficulty(self.table(), missing="drop")
        assert result.keep.tolist() == [True, False, False, True, False]
        assert result.drop_column.tolist() == [-1, 0, 0, -1, 0]
        assert result.missing == {"ref_margin__margin_mean": 3}
        np.testing.assert_allclose(result.difficulty[[0, 3]], [0.0, 1.0])
        assert np.isnan(result.difficulty[[1, 2, 4]]).all()

    @pytest.mark.parametrize(("policy", "expected"), [("hardest", [0.0, 0.625, 0.625, 0.625, 0.625]), ("easiest", [0.375, 0.375, 0.375, 1.0, 0.375])])
    def test_fill(self, policy: str, expected: list[float]) -> None:
        result = compute_difficulty(self.table(), missing=policy)
        assert result.keep.all()
        # Present rows (3.0, 2.0) rank among themselves: 0 and 1; the three missing rows get 1
        # (hardest) or 0 (easiest); re-ranking over five rows averages the tied ranks.
        np.testing.assert_allclose(result.difficulty, expected, atol=1e-12)

    def test_unknown_policy(self) -> None:
        with pytest.raises(ConfigError, match=r"missing='skip' is not one of \['drop', 'hardest', 'easiest'\]"):
            compute_difficulty(self.table(), missing="skip")  # type: ignore[arg-type]


class TestParse:
    @pytest.mark.parametrize(
        ("spec", "column", "direction", "weight"),
        [
            ("a__b", "a__b", None, 1.0),
            ("a__b:easier", "a__b", "larger_is_easier", 1.0),
            ("a__b:harder=2.5", "a__b", "larger_is_harder", 2.5),
            ("a__b=0.5", "a__b", None, 0.5),
        ],
    )
    def test_valid(self, spec: str, column: str, direction: str | None, weight: float) -> None:
        parsed = DifficultyColumn.parse(spec)
        assert (parsed.column, parsed.direction, parsed.weight) == (column, direction, weight)

    def test_bad_direction(self) -> None:
        with pytest.raises(ConfigError, match=r"direction 'up' is not one of"):
            DifficultyColumn.parse("a__b:up")

    @pytest.mark.parametrize("spec", ["a__b=x", "a__b=-1", "a__b=0"])
    def test_bad_weight(self, spec: str) -> None:
        with pytest.raises(ConfigError, match=r"difficulty column spec .*weight"):
            DifficultyColumn.parse(spec)
