"""Curriculum tiers: discretise one difficulty value per row into K ordered tiers (0 = easiest).

:class:`Tierer` is our ``KBinsDiscretizer``: ``fit`` learns ``tier_edges_``, ``transform`` applies
them, and degenerate input (ties at a boundary, constant scores, empty tiers) warns with a
:class:`StagingWarning` that says what to change instead of failing. :func:`tiers_by_group` tiers
each group (category) on its own so that every group spreads evenly over the tiers.

Example:
    >>> import numpy as np
    >>> Tierer("equal", n_tiers=3).fit_transform(np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])).tolist()
    [2, 0, 1, 1, 2, 0]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from sc_data.errors import ConfigError
from sc_data.scorers.base import Direction
from sc_data.stage.order import order_by

Strategy = Literal["equal", "quantile", "threshold", "kmeans"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


class StagingWarning(UserWarning):
    """Tiering degraded (ties, constant scores, empty tiers); the message says what to change."""


class Tierer:
    """Discretise one value per row into K ordered tiers, in the style of KBinsDiscretizer.

    ``fit`` learns ``tier_edges_`` (K+1 ascending edges in value space: min, K-1 cut points, max)
    and ``n_tiers_``; ``transform`` maps new values to tiers with those edges (a value equal to a
    cut point goes to the upper tier). ``fit_transform`` of the ``equal`` strategy splits by
    sorted position instead, as the paper did, so bin sizes are exact even with tied values
    (ties at a boundary are split by ``tie_break`` and a warning says so). Every warning is also
    kept in ``warnings_`` so the caller can record it in the manifest.

    Args:
        strategy: ``equal`` (K equal-count bins, the last takes the remainder: the paper),
            ``quantile`` (``cuts`` = quantiles in (0, 1)), ``threshold`` (``cuts`` = raw values),
            ``kmeans`` (1-D k-means, tiers renumbered by mean value). Default ``equal``.
        n_tiers: K >= 1 (default 3; ignored for quantile/threshold: len(cuts) + 1).
        cuts: quantiles in (0, 1) for ``quantile``; raw values for ``threshold``.
        direction: for ``threshold``, whether larger raw values are easier or harder.
        seed: k-means seed.
    """

    def __init__(
        self,
        strategy: Strategy = "equal",
        *,
        n_tiers: int = 3,
        cuts: list[float] | None = None,
        direction: Direction = "larger_is_harder",
        seed: int = 42,
    ) -> None:
        self.strategy = strategy
        self.n_tiers = n_tiers
        self.cuts = cuts
        self.direction = direction
        self.seed = seed

    def _warn(self, message: str) -> None:
        self.warnings_.append(message)
        warnings.warn(message, StagingWarning, stacklevel=3)

    def fit(self, values: np.ndarray, tie_break: np.ndarray | None = None) -> Tierer:
        """Learn ``tier_edges_`` from ``values`` (float, no NaN); returns self."""
        self.fit_transform(values, tie_break)
        return self

    def fit_transform(self, values: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
        """Fit and return the tier (int64, 0 = easiest) of each value.

        Args:
            values: (n,) float, no NaN.
            tie_break: (n,) secondary sort key for ``equal`` (default: input order).

        Raises:
            ConfigError: unknown strategy, n_tiers < 1, or quantile/threshold without cuts.
        """
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown tier strategy {self.strategy!r}; valid: {sorted(STRATEGIES)}")
        if self.strategy in ("quantile", "threshold") and not self.cuts:
            raise ConfigError(f"strategy {self.strategy!r} needs cuts")
        if self.strategy in ("equal", "kmeans") and self.n_tiers < 1:
            raise ConfigError(f"n_tiers must be >= 1, got {self.n_tiers}")
        values = np.asarray(values, dtype=np.float64)
        self.warnings_: list[str] = []
        n = len(values)
        lo, hi = (float(values.min()), float(values.max())) if n else (0.0, 0.0)
        if self.strategy == "equal":
            tiers = self._equal(values, tie_break)
        elif self.strategy == "kmeans":
            tiers = self._kmeans(values, lo, hi)
        else:
            self.n_tiers_ = len(self.cuts) + 1
            if self.strategy == "quantile":
                interior = np.quantile(values, self.cuts) if n else np.zeros(len(self.cuts))
                self.tier_edges_ = np.concatenate([[lo], interior, [hi]])
            else:
                self.tier_edges_ = np.concatenate([[min(lo, self.cuts[0])], self.cuts, [max(hi, self.cuts[-1])]])
            tiers = self.transform(values)
        counts = np.bincount(tiers, minlength=self.n_tiers_)
        empty = [k for k in range(self.n_tiers_) if counts[k] == 0]
        if n and empty:
            self._warn(
                f"tier(s) {empty} of {self.n_tiers_} are empty ({self.strategy} on {n} rows); "
                "consider decreasing the number of tiers or changing the cuts"
            )
        if n > 1 and lo == hi:
            self._warn(
                f"all {n} difficulty values are equal ({lo}); the tiers carry no difficulty signal. "
                "Check the score columns (a scorer that failed?) or add --difficulty-column"
            )
        return tiers

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Tier of each value under the fitted edges.

        Raises:
            ConfigError: the Tierer is not fitted.
        """
        if not hasattr(self, "tier_edges_"):
            raise ConfigError("this Tierer is not fitted yet; call fit() before transform()")
        values = np.asarray(values, dtype=np.float64)
        tiers = np.searchsorted(self.tier_edges_[1:-1], values, side="right").astype(np.int64)
        if self.strategy == "threshold" and self.direction == "larger_is_easier":
            tiers = self.n_tiers_ - 1 - tiers
        return tiers

    def _equal(self, values: np.ndarray, tie_break: np.ndarray | None) -> np.ndarray:
        n, k = len(values), self.n_tiers
        self.n_tiers_ = k
        order = order_by(values, tie_break)
        base = n // k
        if n and base == 0:
            self._warn(f"only {n} training rows for {k} tiers; every row goes to the last tier. Use fewer tiers")
        tiers = np.empty(n, dtype=np.int64)
        tiers[order] = np.minimum(np.arange(n) // base, k - 1) if base else k - 1
        sorted_v = values[order]
        starts = [j * base for j in range(1, k)]  # sorted position where tier j begins
        self.tier_edges_ = sorted_v[[0, *(min(s, n - 1) for s in starts), n - 1]] if n else np.zeros(k + 1)
        straddle = [j for j, s in zip(range(1, k), starts, strict=True) if 0 < s < n and sorted_v[s - 1] == sorted_v[s]]
        if straddle:
            self._warn(
                f"rows with equal difficulty straddle the boundary before tier(s) {straddle}; they were "
                "split by id so the tiers keep equal sizes. Consider fewer tiers or another score column"
            )
        return tiers

    def _kmeans(self, values: np.ndarray, lo: float, hi: float) -> np.ndarray:
        from sklearn.cluster import KMeans

        # 1-D k-means on the distinct values weighted by their counts: same optimum, far fewer points.
        uniq, counts = np.unique(values, return_counts=True)
        k = min(self.n_tiers, len(uniq))
        if k < self.n_tiers:
            self._warn(
                f"only {len(uniq)} distinct difficulty values for {self.n_tiers} k-means tiers; using "
                f"{k}. Consider decreasing the number of tiers"
            )
        self.n_tiers_ = max(k, 1)
        if k <= 1:
            self.tier_edges_ = np.array([lo, hi])
            return np.zeros(len(values), dtype=np.int64)
        km = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(uniq[:, None], sample_weight=counts)
        centers = np.sort(km.cluster_centers_[:, 0])
        # In 1-D the nearest centre is decided by the midpoints: edges renumber tiers by mean.
        self.tier_edges_ = np.concatenate([[lo], (centers[1:] + centers[:-1]) / 2, [hi]])
        return self.transform(values)


def _balanced_equal(n: int, k: int) -> np.ndarray:
    """Tier of each sorted position when n rows are split into k bins whose sizes differ by <= 1.

    The extra rows go to the last tiers (the remainder stays at the hard end, as in the paper).
    """
    base, rem = divmod(n, k)
    small = k - rem  # tiers with `base` rows, then `rem` tiers with base + 1
    pos = np.arange(n)
    head = small * base
    return np.where(pos < head, pos // max(base, 1), small + (pos - head) // (base + 1)).astype(np.int64)


def tiers_by_group(
    values: np.ndarray,
    groups: np.ndarray,
    tie_break: np.ndarray,
    *,
    names: Sequence[str],
    strategy: Literal["equal", "quantile"],
    n_tiers: int,
    cuts: list[float] | None = None,
) -> tuple[np.ndarray, dict[str, list[float]], list[str]]:
    """Tier each group on its own, so that every group's rows spread evenly over the tiers.

    ``equal`` splits each group, sorted by (value, tie_break), into ``n_tiers`` bins whose sizes
    differ by at most one; ``quantile`` fits one :class:`Tierer` per group (edges per group).

    Args:
        values: (n,) difficulty per row.
        groups: (n,) int group code per row, an index into ``names``.
        tie_break: (n,) secondary sort key.
        names: group names, for the edges and the warnings.
        strategy: ``equal`` or ``quantile``.
        n_tiers: K for ``equal`` (for ``quantile`` it is len(cuts) + 1).
        cuts: quantiles in (0, 1) for ``quantile``.

    Returns:
        (tier per row, group name -> tier edges (``quantile`` only), warnings prefixed by the group).
    """
    tiers = np.empty(len(values), dtype=np.int64)
    edges: dict[str, list[float]] = {}
    messages: list[str] = []
    for code in np.unique(groups):
        members = np.flatnonzero(groups == code)
        if strategy == "equal":
            order = order_by(values[members], tie_break[members])
            tiers[members[order]] = _balanced_equal(len(members), n_tiers)
        else:
            tierer = Tierer("quantile", cuts=cuts)
            tiers[members] = tierer.fit_transform(values[members])
            edges[names[code]] = tierer.tier_edges_.tolist()
            messages += [f"category {names[code]!r}: {m}" for m in tierer.warnings_]
    return tiers, edges, messages
