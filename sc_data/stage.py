"""Curriculum staging: difficulty -> eval split -> (dev split) -> budget -> tiers -> export.

With no options it does what the Staged-Competence paper (arXiv 2605.26315) did: difficulty from
the scorers' columns present, 20 % of the pairs held out for evaluation (seed 42), the rest sorted
by difficulty into K=3 equal-count tiers (the last takes the remainder). Every step is vectorised
(numpy / pyarrow): no per-row Python, so a million pairs stage in seconds.

Order matters and is fixed: the eval split is held out first (stratified by difficulty quartile and
category, grouped by normalised prompt so no prompt sits on both sides), then the optional dev
split (Cat-DPO's margin controller measures on it), then the data budget, then the tiers.

Example:
    >>> from sc_data.stage import StageConfig, assign
    >>> staged = assign(scored_table, StageConfig(tiers=3))  # doctest: +SKIP
    >>> staged.column_names[-3:]  # doctest: +SKIP
    ['difficulty', 'tier', 'split']
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sc_data.difficulty import (
    BUILTIN_DIFFICULTY_COLUMNS,
    DifficultyColumn,
    MissingPolicy,
    category_codes,
    compute_difficulty,
)
from sc_data.errors import ConfigError, InputError
from sc_data.io import sha256_file
from sc_data.schema import REJECT_SCHEMA, validate_table

Strategy = Literal["equal", "quantile", "threshold", "kmeans"]
SPLIT_NAMES = ("train", "eval", "dev")
_TRAIN, _EVAL, _DEV = 0, 1, 2


class StagingWarning(UserWarning):
    """Tiering degraded (ties, constant scores, empty tiers); the message says what to change."""


class StageConfig(BaseModel):
    """The staging recipe; written verbatim into the manifest.

    Attributes:
        strategy: ``equal`` (the paper: K equal-count bins by difficulty, last takes the
            remainder), ``quantile`` (``cuts`` = difficulty quantiles in (0, 1)), ``threshold``
            (``cuts`` = raw values of ``threshold_column``), ``kmeans`` (1-D k-means on difficulty,
            tier 0 = lowest mean difficulty). Default ``equal``.
        tiers: number of tiers K >= 1 (default 3); for quantile/threshold it is len(cuts) + 1.
        cuts: cut points for ``quantile`` / ``threshold``, strictly increasing.
        threshold_column: raw score column for ``threshold``, ``COL[:easier|harder]``.
        eval_fraction: share of pairs held out as the ``test`` split, in [0, 1) (paper: 0.2).
        dev_fraction: share of the remaining training pairs carved into a ``dev`` split, in
            [0, 1) (Cat-DPO measures per-category unsafe rates on it; default 0).
        budget: fraction of training pairs kept, in (0, 1] (paper: 0.75 matched the baseline).
        budget_mode: ``uniform`` (random within each tier), ``easiest`` or ``hardest`` end.
        stratify: ``category`` keeps each category's count equal across tiers (within one row;
            tiers are then ordered by difficulty within each category); ``none`` (default).
        per_category: rank difficulty within each category.
        missing: rows with a missing score: ``drop`` (to the rejects), ``hardest``, ``easiest``.
        difficulty_columns: columns and directions/weights; empty = every known scorer's
            difficulty column present. Strings ``COL[:easier|harder][=weight]`` are accepted.
        seed: seed of every random choice (paper: 42).
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "equal"
    tiers: int = Field(default=3, ge=1, le=1000)
    cuts: list[float] | None = None
    threshold_column: str | None = None
    eval_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    dev_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    budget: float = Field(default=1.0, gt=0.0, le=1.0)
    budget_mode: Literal["uniform", "easiest", "hardest"] = "uniform"
    stratify: Literal["none", "category"] = "none"
    per_category: bool = False
    missing: MissingPolicy = "drop"
    difficulty_columns: list[DifficultyColumn] = Field(default_factory=list)
    seed: int = 42

    @field_validator("difficulty_columns", mode="before")
    @classmethod
    def _parse_specs(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [DifficultyColumn.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        strategy = self.strategy
        if strategy in ("quantile", "threshold"):
            if not self.cuts:
                raise ValueError(f"strategy={strategy!r} needs cuts, e.g. cuts=[0.3, 0.7] (--cuts 0.3,0.7)")
            if any(b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)):
                raise ValueError(f"cuts must be strictly increasing, got {self.cuts}")
            if strategy == "quantile" and not all(0.0 < c < 1.0 for c in self.cuts):
                raise ValueError(f"quantile cuts must lie in (0, 1), got {self.cuts}")
            if "tiers" in self.model_fields_set and self.tiers != len(self.cuts) + 1:
                raise ValueError(
                    f"tiers={self.tiers} contradicts {len(self.cuts)} cuts ({len(self.cuts) + 1} tiers); drop tiers"
                )
            self.tiers = len(self.cuts) + 1
        elif self.cuts is not None:
            raise ValueError(f"cuts apply to strategy 'quantile' or 'threshold', not {strategy!r}; drop cuts")
        if strategy == "threshold" and not self.threshold_column:
            raise ValueError("strategy='threshold' needs threshold_column (--threshold-column COL[:easier|harder])")
        if strategy != "threshold" and self.threshold_column:
            raise ValueError(f"threshold_column applies to strategy 'threshold', not {strategy!r}")
        if self.stratify == "category" and strategy not in ("equal", "quantile"):
            raise ValueError(f"stratify='category' applies to strategies 'equal' and 'quantile', not {strategy!r}")
        if self.eval_fraction + self.dev_fraction >= 1.0:
            raise ValueError(
                f"eval_fraction + dev_fraction must be < 1, got {self.eval_fraction} + {self.dev_fraction}"
            )
        return self


def validation_message(error: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message; ...`` with the offending input."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg} (got {err['input']!r})" if err["loc"] else f"{msg}")
    return "; ".join(parts)


def make_config(config: StageConfig | None = None, **options: Any) -> StageConfig:
    """``config`` (or the defaults) updated with ``options``, validated.

    Raises:
        ConfigError: an unknown option or an invalid value, worded by pydantic.
    """
    base = config.model_dump(exclude_unset=True) if config is not None else {}
    unknown = sorted(set(options) - set(StageConfig.model_fields))
    if unknown:
        raise ConfigError(f"unknown staging option(s) {unknown}; valid: {sorted(StageConfig.model_fields)}")
    try:
        return StageConfig(**{**base, **options})
    except ValidationError as e:
        raise ConfigError(f"invalid staging config: {validation_message(e)}") from e


# ----------------------------------------------------------------------------- tiering


class Tierer:
    """Discretise one value per row into K ordered tiers, in the style of KBinsDiscretizer.

    ``fit`` learns ``tier_edges_`` (K+1 ascending edges in value space: min, K-1 cut points, max)
    and ``n_tiers_``; ``transform`` maps new values to tiers with those edges (a value equal to a
    cut point goes to the upper tier). ``fit_transform`` of the ``equal`` strategy splits by
    sorted position instead, as the paper did, so bin sizes are exact even with tied values
    (ties at a boundary are split by ``tie_break`` and a warning says so).

    Args:
        strategy: ``equal`` | ``quantile`` | ``threshold`` | ``kmeans``.
        n_tiers: K (ignored for quantile/threshold: len(cuts) + 1).
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
        direction: Literal["larger_is_easier", "larger_is_harder"] = "larger_is_harder",
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

        Raises:
            ConfigError: unknown strategy, or quantile/threshold without cuts.
        """
        values = np.asarray(values, dtype=np.float64)
        self.warnings_: list[str] = []
        if self.strategy not in ("equal", "quantile", "threshold", "kmeans"):
            raise ConfigError(
                f"unknown tier strategy {self.strategy!r}; valid: ['equal', 'kmeans', 'quantile', 'threshold']"
            )
        if self.strategy in ("quantile", "threshold") and not self.cuts:
            raise ConfigError(f"strategy {self.strategy!r} needs cuts")
        n = len(values)
        lo, hi = (float(values.min()), float(values.max())) if n else (0.0, 0.0)
        if self.strategy == "equal":
            tiers = self._equal(values, tie_break)
        elif self.strategy == "quantile":
            self.n_tiers_ = len(self.cuts) + 1
            interior = np.quantile(values, self.cuts) if n else np.zeros(len(self.cuts))
            self.tier_edges_ = np.concatenate([[lo], interior, [hi]])
            tiers = self.transform(values)
        elif self.strategy == "threshold":
            self.n_tiers_ = len(self.cuts) + 1
            self.tier_edges_ = np.concatenate([[min(lo, self.cuts[0])], self.cuts, [max(hi, self.cuts[-1])]])
            tiers = self.transform(values)
        else:
            tiers = self._kmeans(values)
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
        interior = self.tier_edges_[1:-1]
        tiers = np.searchsorted(interior, values, side="right").astype(np.int64)
        if self.strategy == "threshold" and self.direction == "larger_is_easier":
            tiers = self.n_tiers_ - 1 - tiers
        return tiers

    def _equal(self, values: np.ndarray, tie_break: np.ndarray | None) -> np.ndarray:
        n, k = len(values), self.n_tiers
        self.n_tiers_ = k
        order = np.lexsort((tie_break, values)) if tie_break is not None else np.argsort(values, kind="stable")
        base = n // k
        if n and base == 0:
            self._warn(f"only {n} training rows for {k} tiers; every row goes to the last tier. Use fewer tiers")
        position_tier = np.minimum(np.arange(n) // max(base, 1), k - 1) if base else np.full(n, k - 1)
        tiers = np.empty(n, dtype=np.int64)
        tiers[order] = position_tier
        sorted_v = values[order]
        starts = [j * base for j in range(1, k)]
        self.tier_edges_ = np.array(
            [sorted_v[0] if n else 0.0] + [sorted_v[min(s, n - 1)] if n else 0.0 for s in starts] + [sorted_v[-1] if n else 0.0]
        )
        straddle = [j for j, s in zip(range(1, k), starts, strict=True) if 0 < s < n and sorted_v[s - 1] == sorted_v[s]]
        if straddle:
            self._warn(
                f"rows with equal difficulty straddle the boundary before tier(s) {straddle}; they were "
                "split by id so the tiers keep equal sizes. Consider fewer tiers or another score column"
            )
        return tiers

    def _kmeans(self, values: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans

        distinct = np.unique(values)
        k = min(self.n_tiers, len(distinct))
        if k < self.n_tiers:
            self._warn(
                f"only {len(distinct)} distinct difficulty values for {self.n_tiers} k-means tiers; using "
                f"{k}. Consider decreasing the number of tiers"
            )
        self.n_tiers_ = max(k, 1)
        if k <= 1:
            self.tier_edges_ = np.array([values.min(), values.max()]) if len(values) else np.zeros(2)
            return np.zeros(len(values), dtype=np.int64)
        # 1-D k-means on the distinct values weighted by their counts: same optimum, far fewer points.
        uniq, counts = np.unique(values, return_counts=True)
        km = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(uniq[:, None], sample_weight=counts)
        centers = np.sort(km.cluster_centers_[:, 0])
        # In 1-D the nearest centre is decided by the midpoints: edges renumber tiers by mean.
        self.tier_edges_ = np.concatenate([[values.min()], (centers[1:] + centers[:-1]) / 2, [values.max()]])
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


# ----------------------------------------------------------------------------- splits


_PY_WHITESPACE = r"[\s\x0b\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]+"


def prompt_group_codes(prompt: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Int group per row: rows share a code iff their :func:`normalised_prompt_key` agrees.

    The key (NFC, lower case, whitespace runs collapsed, ``role:content`` per message) is built
    with pyarrow compute instead of a Python loop; tests check it against the reference function.
    """
    arr = prompt.combine_chunks() if isinstance(prompt, pa.ChunkedArray) else prompt
    messages = arr.values  # unsliced child; the offsets below index into it
    content = pc.utf8_normalize(messages.field("content"), "NFC")
    content = pc.utf8_lower(content)
    content = pc.replace_substring_regex(content, _PY_WHITESPACE, " ")
    content = pc.utf8_trim(content, " ")
    text = pc.binary_join_element_wise(messages.field("role"), content, ":")
    joined = pc.binary_join(pa.ListArray.from_arrays(arr.offsets, text), "\n")
    return pc.dictionary_encode(joined).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def grouped_holdout(
    groups: np.ndarray, strata: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick ~``fraction`` of the rows, whole groups at a time, evenly across strata.

    Groups are shuffled, ordered by stratum, and taken by systematic sampling (every
    1/fraction-th group from a random start), so each group is taken with probability
    ``fraction`` whatever its size, every stratum gets its share within one group, and the total
    stays close to fraction x N even with many small strata (where rounding per stratum would
    take nothing). A group's stratum is that of its first row.

    Returns:
        bool mask (n,) of rows held out.
    """
    n = len(groups)
    if n == 0 or fraction <= 0:
        return np.zeros(n, dtype=bool)
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    shuffle = rng.permutation(len(uniq))
    order = np.lexsort((shuffle, strata[first]))
    position = np.arange(len(uniq))
    start = rng.random()
    taken_sorted = np.floor(fraction * (position + 1) + start) > np.floor(fraction * position + start)
    taken = np.empty(len(uniq), dtype=bool)
    taken[order] = taken_sorted
    return taken[inverse.reshape(-1)]


def _strata(difficulty: np.ndarray, categories: np.ndarray) -> np.ndarray:
    quartile = np.minimum(np.floor(difficulty * 4), 3).astype(np.int64)
    return categories * 4 + quartile


# ----------------------------------------------------------------------------- assignment


@dataclass
class Assignment:
    """Result of :func:`plan`: per-row decisions over the whole input table.

    Attributes:
        table: the input table plus ``difficulty`` (float64), ``tier`` (int64, null off train) and
            ``split`` (string, null on rejected rows).
        keep: bool mask of rows that are in the staged dataset.
        rejects: rows left out, in the rejects schema (``line`` = 0-based row index in the input,
            ``raw`` = the pair id), reasons ``missing_score:<col>`` or ``budget:<mode>``.
        parts: output part -> row indices in file order (``tier_k`` sorted by difficulty, then id).
        n_tiers: number of tiers.
        tier_edges: the Tierer's edges (per category when stratified).
        difficulty_columns: the resolved difficulty columns.
        missing: column -> rows whose score was missing.
        warnings: what degraded and what to change.
    """

    table: pa.Table
    keep: np.ndarray
    rejects: pa.Table
    parts: dict[str, np.ndarray]
    n_tiers: int
    tier_edges: Any
    difficulty_columns: list[DifficultyColumn]
    missing: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def _id_rank(table: pa.Table) -> np.ndarray:
    """Rank of each row's id (ties by position): the deterministic tie-break everywhere."""
    order = pc.sort_indices(table.select(["id"]), sort_keys=[("id", "ascending")]).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _threshold_values(table: pa.Table, config: StageConfig) -> tuple[np.ndarray, np.ndarray, str, str]:
    spec = DifficultyColumn.parse(config.threshold_column or "")
    if spec.column not in table.column_names:
        raise ConfigError(f"threshold column {spec.column!r} is not in the table; it has {table.column_names}")
    direction = spec.direction or BUILTIN_DIFFICULTY_COLUMNS.get(spec.column)
    if direction is None:
        raise ConfigError(
            f"threshold column {spec.column!r} has no known direction; write {spec.column}:easier or {spec.column}:harder"
        )
    raw = table.column(spec.column).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return raw, np.isnan(raw), spec.column, direction


def plan(table: pa.Table, config: StageConfig | None = None, *, source: str = "<table>") -> Assignment:
    """Decide difficulty, split and tier of every row; see the module docstring for the order.

    Args:
        table: scored pairs (canonical columns + score columns).
        config: the recipe (default: the paper's).
        source: name recorded as ``source_file`` in the rejects.

    Raises:
        InputError: canonical columns missing. ConfigError: see :class:`StageConfig` and
            :func:`sc_data.difficulty.resolve_columns`.
    """
    config = config or StageConfig()
    table = validate_table(table, where=source)
    for name in ("difficulty", "tier", "split"):
        if name in table.column_names:
            table = table.drop_columns([name])  # re-staging a staged table recomputes them
    n = table.num_rows
    diff = compute_difficulty(
        table, config.difficulty_columns or None, per_category=config.per_category, missing=config.missing
    )
    keep = diff.keep.copy()
    reason = np.full(n, None, dtype=object)
    for j, col in enumerate(diff.columns):
        reason[diff.drop_column == j] = f"missing_score:{col.column}"
    missing = dict(diff.missing)
    threshold_raw = None
    if config.strategy == "threshold":
        threshold_raw, absent, tcol, tdir = _threshold_values(table, config)
        missing.setdefault(tcol, int(absent.sum()))
        if config.missing == "drop":
            reason[absent & keep] = f"missing_score:{tcol}"
            keep &= ~absent
        else:
            harder = (config.missing == "hardest") == (tdir == "larger_is_harder")
            threshold_raw = np.where(absent, np.inf if harder else -np.inf, threshold_raw)
    difficulty = diff.difficulty
    cats, cat_names = category_codes(table)
    id_rank = _id_rank(table)
    rng = np.random.default_rng(config.seed)

    rows = np.flatnonzero(keep)
    groups = prompt_group_codes(table.column("prompt"))
    split = np.full(n, -1, dtype=np.int64)
    strata = _strata(difficulty[rows], cats[rows])
    is_eval = grouped_holdout(groups[rows], strata, config.eval_fraction, rng)
    split[rows] = np.where(is_eval, _EVAL, _TRAIN)
    if config.dev_fraction > 0:
        train_rows = np.flatnonzero(split == _TRAIN)
        share = config.dev_fraction / (1.0 - config.eval_fraction)  # fraction of the rest
        is_dev = grouped_holdout(groups[train_rows], _strata(difficulty[train_rows], cats[train_rows]), share, rng)
        split[train_rows[is_dev]] = _DEV

    train = np.flatnonzero(split == _TRAIN)
    if config.budget < 1.0 and config.budget_mode != "uniform":
        n_keep = int(round(config.budget * len(train)))
        order = np.lexsort((id_rank[train], difficulty[train]))
        kept_pos = order[:n_keep] if config.budget_mode == "easiest" else order[len(train) - n_keep :]
        dropped = np.setdiff1d(train, train[kept_pos])
        split[dropped], reason[dropped], keep[dropped] = -1, f"budget:{config.budget_mode}", False
        train = np.flatnonzero(split == _TRAIN)

    tier = np.full(n, -1, dtype=np.int64)
    tier_warnings: list[str] = []
    if config.stratify == "category":
        tier_edges: Any = {}
        n_tiers = config.tiers
        for code in np.unique(cats[train]):
            members = train[cats[train] == code]
            if config.strategy == "equal":
                order = np.lexsort((id_rank[members], difficulty[members]))
                tier[members[order]] = _balanced_equal(len(members), n_tiers)
            else:
                tierer = Tierer("quantile", cuts=config.cuts, seed=config.seed)
                tier[members] = tierer.fit_transform(difficulty[members], id_rank[members])
                tier_edges[cat_names[code]] = tierer.tier_edges_.tolist()
                tier_warnings += tierer.warnings_
    else:
        if config.strategy == "threshold":
            values = threshold_raw[train]
            tierer = Tierer("threshold", cuts=config.cuts, direction=tdir, seed=config.seed)
        else:
            values = difficulty[train]
            tierer = Tierer(config.strategy, n_tiers=config.tiers, cuts=config.cuts, seed=config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StagingWarning)  # collected into the manifest instead
            tier[train] = tierer.fit_transform(values, id_rank[train])
        n_tiers, tier_edges, tier_warnings = tierer.n_tiers_, tierer.tier_edges_.tolist(), tierer.warnings_

    if config.budget < 1.0 and config.budget_mode == "uniform":
        noise = rng.random(len(train))
        order = np.lexsort((noise, tier[train]))
        sizes = np.bincount(tier[train], minlength=n_tiers)
        quota = np.round(config.budget * sizes).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        t_sorted = tier[train][order]
        pos_in_tier = np.arange(len(train)) - starts[t_sorted]
        dropped = train[order[pos_in_tier >= quota[t_sorted]]]
        split[dropped], tier[dropped], keep[dropped] = -1, -1, False
        reason[dropped] = "budget:uniform"
        train = np.flatnonzero(split == _TRAIN)

    parts: dict[str, np.ndarray] = {}
    order = np.lexsort((id_rank[train], difficulty[train], tier[train]))
    sorted_train, sorted_tier = train[order], tier[train][order]
    bounds = np.searchsorted(sorted_tier, np.arange(n_tiers + 1))
    for k in range(n_tiers):
        parts[f"tier_{k}"] = sorted_train[bounds[k] : bounds[k + 1]]
    parts["eval"] = np.flatnonzero(split == _EVAL)
    if config.dev_fraction > 0:
        parts["dev"] = np.flatnonzero(split == _DEV)

    out = table.append_column("difficulty", pa.array(difficulty, pa.float64(), from_pandas=True))
    out = out.append_column("tier", pa.array(tier, pa.int64(), mask=tier < 0))
    split_codes = pa.array(np.maximum(split, 0), pa.int32(), mask=split < 0)
    out = out.append_column(
        "split", pa.DictionaryArray.from_arrays(split_codes, pa.array(SPLIT_NAMES)).cast(pa.string())
    )
    return Assignment(
        table=out,
        keep=keep,
        rejects=_rejects(table, ~keep, reason, source),
        parts=parts,
        n_tiers=n_tiers,
        tier_edges=tier_edges,
        difficulty_columns=diff.columns,
        missing=missing,
        warnings=tier_warnings,
    )


def _rejects(table: pa.Table, mask: np.ndarray, reason: np.ndarray, source: str) -> pa.Table:
    rows = np.flatnonzero(mask)
    uniq, inverse = np.unique(reason[rows].astype(str), return_inverse=True)
    fields = [r.split(":", 1)[1] if r.startswith("missing_score:") else None for r in uniq]
    codes = pa.array(inverse.reshape(-1), pa.int32())
    return pa.table(
        {
            "source_file": pa.array(np.full(len(rows), source, dtype=object), pa.string()),
            "line": pa.array(rows, pa.int64()),
            "field": pa.DictionaryArray.from_arrays(codes, pa.array(fields, pa.string())).cast(pa.string()),
            "reason": pa.DictionaryArray.from_arrays(codes, pa.array(uniq.tolist(), pa.string())).cast(pa.string()),
            "raw": table.column("id").take(pa.array(rows, pa.int64())).combine_chunks(),
        },
        schema=REJECT_SCHEMA,
    )


def assign(table: pa.Table, config: StageConfig | None = None) -> pa.Table:
    """The staged rows in memory: input columns plus ``difficulty``, ``tier`` and ``split``.

    Pure (writes nothing); rows left out (missing scores, budget) are not returned; see
    :func:`plan` for them and their reasons.
    """
    result = plan(table, config)
    return result.table.filter(pa.array(result.keep))


# ----------------------------------------------------------------------------- stage


@dataclass
class StageResult:
    """What :func:`stage` wrote.

    Attributes:
        output: the staged folder.
        rows_in, rows_out, rows_rejected: counts (in = out + rejected).
        tiers: tier -> rows (train split).
        mean_difficulty: tier -> mean difficulty.
        splits: split -> rows.
        warnings: degradations, as in the manifest.
    """

    output: Path
    rows_in: int
    rows_out: int
    rows_rejected: int
    tiers: dict[str, int]
    mean_difficulty: dict[str, float]
    splits: dict[str, int]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``--json``)."""
        return {**self.__dict__, "output": str(self.output)}


def read_scored(path: Path) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
    """Read a scored Parquet file (or folder of part files) and the manifest beside it.

    Returns:
        (table, inputs with sha256, upstream manifest or {}). The upstream manifest is
        ``<stem>.manifest.json`` beside a file, or ``sc_manifest.json`` / ``manifest.json``
        inside a folder.

    Raises:
        InputError: the path does not exist or is not Parquet.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"scored input {str(path)!r} does not exist; pass the Parquet file `sc-data score` wrote")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"no .parquet files under {str(path)!r}")
    try:
        table = pq.read_table(path if path.is_dir() else files[0])
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot read {str(path)!r} as Parquet ({e}); is it the output of `sc-data score`?") from e
    inputs = [{"path": str(f), "sha256": sha256_file(f), "format": "parquet"} for f in files]
    candidates = (
        [path / "sc_manifest.json", path / "manifest.json"]
        if path.is_dir()
        else [path.with_name(f"{path.stem}.manifest.json")]
    )
    upstream: dict[str, Any] = {}
    for candidate in candidates:
        if candidate.is_file():
            try:
                upstream = json.loads(candidate.read_text("utf-8"))
            except json.JSONDecodeError as e:
                raise InputError(f"manifest {str(candidate)!r} is not valid JSON: {e}") from e
            inputs.append({"path": str(candidate), "sha256": sha256_file(candidate), "format": "manifest"})
            break
    return table, inputs, upstream


def stage(
    scored: Path | str | pa.Table,
    output: Path | str,
    config: StageConfig | None = None,
    *,
    overwrite: bool = False,
    **options: Any,
) -> StageResult:
    """Stage a scored table into a curriculum dataset folder (Parquet shards, manifest, card).

    Args:
        scored: scored Parquet file / folder, or an in-memory table.
        output: target folder; written beside and renamed into place at the end.
        config: the staging recipe (default: the paper's); ``options`` override its fields.
        overwrite: replace an existing ``output`` (atomically swapped at the end).
        **options: :class:`StageConfig` fields and :class:`sc_data.export.ExportConfig` fields
            (``max_shard_rows``, ``row_group_rows``, ``plots``).

    Returns:
        A :class:`StageResult`.

    Raises:
        ConfigError: invalid options or an existing output without ``overwrite``.
        InputError: unreadable input or missing canonical columns.

    Example:
        >>> stage("scored.parquet", "staged", tiers=3, eval_fraction=0.2)  # doctest: +SKIP
    """
    from sc_data.export import ExportConfig, export

    export_keys = set(ExportConfig.model_fields)
    try:
        export_config = ExportConfig(**{k: v for k, v in options.items() if k in export_keys})
    except ValidationError as e:
        raise ConfigError(f"invalid export option: {validation_message(e)}") from e
    config = make_config(config, **{k: v for k, v in options.items() if k not in export_keys})
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigError(f"output {str(output)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    if isinstance(scored, pa.Table):
        table, inputs, upstream, source = scored, [], {}, "<table>"
    else:
        table, inputs, upstream = read_scored(Path(scored))
        source = str(scored)
    result = plan(table, config, source=source)
    recipe = {
        "stage": config.model_dump(mode="json"),
        "export": export_config.model_dump(mode="json"),
        "difficulty_columns": [c.model_dump(mode="json") for c in result.difficulty_columns],
        "n_tiers": result.n_tiers,
        "tier_edges": result.tier_edges,
        "missing_scores": result.missing,
    }
    written = export(
        result.table,
        output,
        parts=result.parts,
        rejects=result.rejects,
        recipe=recipe,
        inputs=inputs,
        upstream=upstream,
        warnings=result.warnings,
        config=export_config,
        overwrite=overwrite,
    )
    difficulty = result.table.column("difficulty").to_numpy(zero_copy_only=False)
    tiers = {k: len(v) for k, v in result.parts.items() if k.startswith("tier_")}
    mean = {
        k: (float(np.mean(difficulty[v])) if len(v) else math.nan)
        for k, v in result.parts.items()
        if k.startswith("tier_")
    }
    return StageResult(
        output=output,
        rows_in=table.num_rows,
        rows_out=written.rows_out,
        rows_rejected=result.rejects.num_rows,
        tiers=tiers,
        mean_difficulty=mean,
        splits={"train": sum(tiers.values()), **{k: len(v) for k, v in result.parts.items() if not k.startswith("tier_")}},
        warnings=result.warnings,
    )
