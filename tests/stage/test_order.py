"""Sort orders: order_by / then_by_codes give np.lexsort's permutation exactly (ties, NaNs, wide codes)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.stage.order import order_by, then_by_codes

# Few distinct values so that ties are common; NaN and -0.0 / 0.0 included.
tied_floats = st.lists(st.sampled_from([0.0, -0.0, 0.25, 1.0, -3.5, np.inf, np.nan]), max_size=60)


class TestOrderBy:
    @settings(max_examples=200, deadline=None)
    @given(values=tied_floats, seed=st.integers(0, 2**16))
    def test_equals_lexsort_with_tie_break(self, values, seed):
        v = np.array(values, dtype=np.float64)
        tie_break = np.random.default_rng(seed).integers(0, 4, len(v))  # itself tied: position decides last
        np.testing.assert_array_equal(order_by(v, tie_break), np.lexsort((tie_break, v)))

    @settings(max_examples=200, deadline=None)
    @given(values=tied_floats)
    def test_equals_stable_argsort_without_tie_break(self, values):
        v = np.array(values, dtype=np.float64)
        np.testing.assert_array_equal(order_by(v), np.argsort(v, kind="stable"))

    def test_distinct_values_need_no_tie_break(self):
        v = np.random.default_rng(0).permutation(1000).astype(np.float64)
        np.testing.assert_array_equal(order_by(v, np.zeros(1000, dtype=np.int64)), np.argsort(v))


class TestThenByCodes:
    @settings(max_examples=200, deadline=None)
    @given(values=tied_floats, seed=st.integers(0, 2**16), width=st.sampled_from([3, 300, 70_000]))
    def test_equals_three_key_lexsort(self, values, seed, width):
        """Codes under 2**8, under 2**16 (both radix-sorted) and wider (sorted as int64)."""
        rng = np.random.default_rng(seed)
        v = np.array(values, dtype=np.float64)
        tie_break, codes = rng.permutation(len(v)), rng.integers(0, width, len(v))
        np.testing.assert_array_equal(then_by_codes(order_by(v, tie_break), codes), np.lexsort((tie_break, v, codes)))

    def test_empty(self):
        empty = np.array([], dtype=np.int64)
        assert then_by_codes(order_by(np.array([])), empty).tolist() == []
