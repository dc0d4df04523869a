"""Tierer (fit / transform, degenerate input) and tiers_by_group."""

from __future__ import annotations

import numpy as np
import pytest

from sc_data.errors import ConfigError
from sc_data.stage.tiers import StagingWarning, Tierer, tiers_by_group


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

    def test_n_tiers_must_be_positive(self) -> None:
        with pytest.raises(ConfigError, match=r"n_tiers must be >= 1, got 0"):
            Tierer("equal", n_tiers=0).fit(np.array([0.1, 0.2]))

    def test_unknown_strategy(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown tier strategy 'median'; valid: \['equal', 'kmeans', 'quantile', 'threshold'\]"):
            Tierer("median").fit(np.array([0.1]))


class TestTiersByGroup:
    def test_equal_balances_each_group(self) -> None:
        values = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.7])
        groups = np.array([0, 0, 0, 0, 1, 1, 1])
        tiers, edges, messages = tiers_by_group(
            values, groups, np.arange(7), names=["a", "b"], strategy="equal", n_tiers=3
        )
        # Group a (4 rows): sizes 1, 1, 2 (the extra row at the hard end); group b: 1, 1, 1.
        assert tiers.tolist() == [2, 0, 2, 1, 0, 2, 1]
        assert edges == {} and messages == []

    def test_quantile_edges_and_warnings_per_group(self) -> None:
        values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
        groups = np.array([0, 0, 0, 0, 1])
        with pytest.warns(StagingWarning):
            tiers, edges, messages = tiers_by_group(
                values, groups, np.arange(5), names=["a", "b"], strategy="quantile", n_tiers=2, cuts=[0.5]
            )
        assert tiers.tolist() == [0, 0, 1, 1, 1]
        np.testing.assert_allclose(edges["a"], [0.1, 0.25, 0.4], rtol=0, atol=1e-12)
        assert messages == ["category 'b': tier(s) [0] of 2 are empty (quantile on 1 rows); consider decreasing the number of tiers or changing the cuts"]
