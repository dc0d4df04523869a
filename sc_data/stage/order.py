"""Sort orders for staging that stay near-linear at millions of rows, equal to ``np.lexsort``'s.

``np.lexsort`` is a stable merge/tim sort per key: at 3M rows a two-key lexsort costs ~10x an
``np.argsort`` of the same floats, and it grew from 3 to 6 µs per row of ``plan`` from 1M to 10M rows.
Here the float key is sorted with the unstable (SIMD) ``np.argsort`` and only the rows that tie
are re-sorted by the tie-break; a small-integer key (tier, category, stratum) is applied with a
stable radix sort (NumPy uses one for integers of 16 bits or less). The permutations are exactly
``np.lexsort``'s, so the staged output does not change.

Example:
    >>> import numpy as np
    >>> order_by(np.array([0.5, 0.1, 0.5]), np.array([9, 0, 3])).tolist()
    [1, 2, 0]
"""

from __future__ import annotations

import numpy as np


def order_by(values: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """``np.lexsort((tie_break, values))``: by value, ties by ``tie_break``, then by position.

    Args:
        values: (n,) numbers; NaNs sort last and tie with each other, as in ``np.lexsort``.
        tie_break: (n,) secondary key; None = position only (``np.argsort(values, kind="stable")``).

    Returns:
        int64 (n,) row positions in sorted order.
    """
    order = np.argsort(values)  # unstable; the tie runs are put in lexsort's order below
    v = values[order]
    same = v[1:] == v[:-1]
    if v.dtype.kind == "f":
        same |= np.isnan(v[1:]) & np.isnan(v[:-1])
    if not same.any():
        return order
    joins_next = np.append(same, False)
    joins_prev = np.insert(same, 0, False)
    tied = np.flatnonzero(joins_prev | joins_next)  # sorted positions inside a tie run
    run = np.cumsum(~joins_prev)[tied]  # (m,) tie run of each, non-decreasing
    members = order[tied]
    keys = (members,) if tie_break is None else (members, np.asarray(tie_break)[members])
    order[tied] = members[np.lexsort((*keys, run))]
    return order


def then_by_codes(order: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``order`` stably re-sorted by ``codes[order]``: ``codes`` becomes the primary key.

    ``then_by_codes(order_by(v, t), c)`` equals ``np.lexsort((t, v, c))``. ``codes`` are small
    non-negative integers (tiers, categories, strata), sorted with a radix sort.
    """
    keys = codes[order]
    if len(keys) and keys.min() >= 0 and keys.max() < 2**16:
        keys = keys.astype(np.uint8 if keys.max() < 2**8 else np.uint16)
    return order[np.argsort(keys, kind="stable")]
