"""Combine score columns into one difficulty in [0, 1] (0 = easiest, 1 = hardest).

Each selected column becomes a direction-corrected rank percentile (average ranks for ties, so
the result does not depend on row order), the percentiles are averaged with weights, and the
mean is ranked again so the final difficulty is itself a rank percentile spread over [0, 1].
Ranking (rather than z-scoring raw values) makes columns on different scales (nats, reward
units, a 0-3 severity) comparable and robust to outliers. See docs/ARCHITECTURE.md, "Staging", and the
Staged-Competence paper (arXiv 2605.26315).

Rows whose score is missing (null, NaN, ±inf, or a non-null ``<scorer>__error``) are handled by
``missing``: ``drop`` (the default: a row with no score has no place in a curriculum, and it is
reported in the rejects with reason ``missing_score:<column>`` so counts still add up),
``hardest`` or ``easiest`` (that column's percentile for the row is 1 or 0).

Example:
    >>> import pyarrow as pa
    >>> t = pa.table({"ref_margin__margin_mean": [3.0, 1.0, 2.0]})
    >>> compute_difficulty(t).difficulty.tolist()
    [0.0, 1.0, 0.5]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from sc_data.errors import ConfigError
from sc_data.schema import SCORE_COLUMN_RE
from sc_data.scorers.base import Direction
from sc_data.stage.order import then_by_codes

log = logging.getLogger(__name__)

MissingPolicy = Literal["drop", "hardest", "easiest"]

#: The built-in scorers' difficulty columns, used when their modules can't be imported
#: (a scored file travels without the heavy scoring dependencies).
BUILTIN_DIFFICULTY_COLUMNS: dict[str, Direction] = {
    "ref_margin__margin_mean": "larger_is_easier",
    "reward_gap__gap": "larger_is_easier",
    "judge__severity": "larger_is_easier",
    "similarity__margin": "larger_is_easier",
}

_DIRECTION_WORDS: dict[str, Direction] = {
    "easier": "larger_is_easier",
    "larger_is_easier": "larger_is_easier",
    "harder": "larger_is_harder",
    "larger_is_harder": "larger_is_harder",
}


class DifficultyColumn(BaseModel):
    """One score column that feeds the difficulty.

    Attributes:
        column: column name, usually ``<scorer>__<field>``.
        direction: ``larger_is_easier`` or ``larger_is_harder``; None = look it up (built-in or
            registered scorer's declared difficulty column).
        weight: weight in the mean of percentiles, > 0 (default 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    direction: Direction | None = None
    weight: float = Field(default=1.0, gt=0)

    @classmethod
    def parse(cls, spec: str) -> DifficultyColumn:
        """Parse ``COL[:easier|harder][=weight]``, e.g. ``ref_margin__margin_mean:easier=2``.

        Raises:
            ConfigError: the direction word or the weight is invalid.
        """
        text, weight = spec, 1.0
        if "=" in text:
            text, _, raw_weight = text.rpartition("=")
            try:
                weight = float(raw_weight)
            except ValueError as e:
                raise ConfigError(
                    f"difficulty column spec {spec!r}: weight {raw_weight!r} is not a number; "
                    "write COL[:easier|harder][=weight], e.g. judge__severity:easier=0.5"
                ) from e
        direction: Direction | None = None
        if ":" in text:
            text, _, word = text.partition(":")
            if word not in _DIRECTION_WORDS:
                raise ConfigError(
                    f"difficulty column spec {spec!r}: direction {word!r} is not one of "
                    f"{sorted(_DIRECTION_WORDS)}; write COL:easier if a larger value means an easier pair"
                )
            direction = _DIRECTION_WORDS[word]
        if weight <= 0 or not np.isfinite(weight):
            raise ConfigError(f"difficulty column spec {spec!r}: weight must be a finite number > 0, got {weight}")
        return cls(column=text, direction=direction, weight=weight)


@dataclass
class DifficultyResult:
    """What :func:`compute_difficulty` found.

    Attributes:
        difficulty: float64 per input row, NaN where the row was dropped.
        keep: bool mask of rows kept (all True unless ``missing='drop'``).
        drop_column: per row, index into ``columns`` of the first missing column that made
            the row drop (reason ``missing_score:<column>``), -1 for kept rows.
        columns: the resolved columns (direction filled in) actually used.
        missing: column -> number of rows whose score was missing.
    """

    difficulty: np.ndarray
    keep: np.ndarray
    drop_column: np.ndarray
    columns: list[DifficultyColumn]
    missing: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- ranks


def grouped_percentile(values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Rank percentile of each value within its group: (average rank) / (group size - 1).

    Ties get their average rank, so equal values get equal percentiles. A group of one row gets 0.
    Vectorised: one sort of the values (ties in any order: a tie run's average rank does not depend
    on it), a radix sort by group, then per tie run, no per-row Python.

    Args:
        values: float64 (n,), no NaN.
        groups: int codes (n,), or None for one group.

    Returns:
        float64 (n,) in [0, 1].
    """
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(values)
    if groups is not None:
        order = then_by_codes(order, np.asarray(groups, dtype=np.int64))
    v = values[order]
    new_group = np.zeros(n, dtype=bool)
    new_group[0] = True
    if groups is not None:
        g = np.asarray(groups, dtype=np.int64)[order]
        new_group[1:] = g[1:] != g[:-1]
    new_tie = new_group.copy()
    new_tie[1:] |= v[1:] != v[:-1]
    group_start = np.flatnonzero(new_group)
    group_size = np.diff(np.append(group_start, n))
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], n)
    gid = np.cumsum(new_group)[tie_start] - 1  # group of each tie run
    avg_pos = (tie_start + tie_end - 1) / 2.0  # 0-based average position of each tie run
    rank_in_group = avg_pos - group_start[gid]
    denom = np.maximum(group_size[gid] - 1, 1)
    out = np.empty(n, dtype=np.float64)
    out[order] = np.repeat(rank_in_group / denom, tie_end - tie_start)
    return out


# ----------------------------------------------------------------------------- columns


def _registered_columns(column_names: Sequence[str]) -> dict[str, Direction]:
    """Difficulty columns declared by the scorers whose prefixes appear in ``column_names``.

    Only scorers that actually wrote columns are imported (importing one may pull in torch), and
    a scorer whose module can't be imported falls back to :data:`BUILTIN_DIFFICULTY_COLUMNS`.
    """
    from sc_data.scorers.base import available_scorers, get_scorer_class

    found: dict[str, Direction] = {}
    prefixes = {c.split("__", 1)[0] for c in column_names if SCORE_COLUMN_RE.match(c)}
    for name in sorted(prefixes & set(available_scorers())):
        try:
            cls = get_scorer_class(name)
            found[cls.difficulty_column()] = cls.direction
        except Exception as e:  # a broken optional scorer must not block staging
            log.debug("scorer %r not importable (%s); using the built-in table", name, e)
    for column, direction in BUILTIN_DIFFICULTY_COLUMNS.items():
        found.setdefault(column, direction)
    return found


def resolve_columns(
    column_names: Sequence[str], specs: Sequence[DifficultyColumn] | None = None
) -> list[DifficultyColumn]:
    """Pick the difficulty columns: the named ones, or every known scorer's column present.

    Raises:
        ConfigError: a named column is absent or has no known direction, or no known
            difficulty column is present and none was named.
    """
    known = _registered_columns(column_names)
    if not specs:
        present = [DifficultyColumn(column=c, direction=d) for c, d in known.items() if c in column_names]
        if not present:
            raise ConfigError(
                f"no known difficulty column in the table; it has {list(column_names)}. Known "
                f"difficulty columns: {sorted(known)}. Run `sc-data score` first, or name a column "
                "with --difficulty-column COL:easier (or COL:harder)"
            )
        return present
    resolved = []
    for spec in specs:
        if spec.column not in column_names:
            raise ConfigError(
                f"difficulty column {spec.column!r} is not in the table; it has {list(column_names)}"
            )
        direction = spec.direction or known.get(spec.column)
        if direction is None:
            raise ConfigError(
                f"difficulty column {spec.column!r} has no known direction; name it as "
                f"{spec.column}:easier (larger = easier) or {spec.column}:harder (larger = harder)"
            )
        resolved.append(spec.model_copy(update={"direction": direction}))
    return resolved


def _missing_mask(table: pa.Table, column: str) -> np.ndarray:
    """Rows where ``column`` is null, NaN or ±inf (no rank can be trusted for an overflowed score), or its
    scorer's ``<scorer>__error`` is non-null."""
    values = table.column(column)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
        raise ConfigError(
            f"difficulty column {column!r} has type {values.type}; a difficulty column must be numeric"
        )
    arr = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    mask = ~np.isfinite(arr)
    error_col = f"{column.split('__', 1)[0]}__error"
    if "__" in column and error_col in table.column_names:
        mask |= pc.is_valid(table.column(error_col)).to_numpy(zero_copy_only=False)
    return mask


def category_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Int code per row of the primary ``category`` (null counts as ``unknown``), and the names."""
    if "category" not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64), ["unknown"]
    cat = pc.fill_null(table.column("category").cast(pa.string()), "unknown")
    encoded = pc.dictionary_encode(cat).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def compute_difficulty(
    table: pa.Table,
    columns: Sequence[DifficultyColumn] | None = None,
    *,
    per_category: bool = False,
    missing: MissingPolicy = "drop",
) -> DifficultyResult:
    """Difficulty per row: weighted mean of direction-corrected rank percentiles, re-ranked.

    Args:
        table: scored pairs.
        columns: the columns to use (default: every known scorer's difficulty column present).
        per_category: rank within each primary category (so every category spans [0, 1]).
        missing: ``drop`` | ``hardest`` | ``easiest``, see the module docstring.

    Returns:
        A :class:`DifficultyResult`; ``difficulty`` is NaN on dropped rows.

    Raises:
        ConfigError: see :func:`resolve_columns`; an unknown ``missing`` policy.
    """
    if missing not in ("drop", "hardest", "easiest"):
        raise ConfigError(f"missing={missing!r} is not one of ['drop', 'hardest', 'easiest']")
    resolved = resolve_columns(table.column_names, columns)
    n = table.num_rows
    masks = {c.column: _missing_mask(table, c.column) for c in resolved}
    any_missing = np.zeros(n, dtype=bool)
    for m in masks.values():
        any_missing |= m
    keep = ~any_missing if missing == "drop" else np.ones(n, dtype=bool)
    rows = np.flatnonzero(keep)
    groups = category_codes(table)[0][rows] if per_category else None  # None: one group, no sort by group
    weighted = np.zeros(len(rows), dtype=np.float64)
    for col in resolved:
        raw = table.column(col.column).cast(pa.float64()).to_numpy(zero_copy_only=False)[rows]
        present = ~masks[col.column][rows]
        oriented = -raw if col.direction == "larger_is_easier" else raw
        pct = np.full(len(rows), 1.0 if missing == "hardest" else 0.0)
        pct[present] = grouped_percentile(oriented[present], None if groups is None else groups[present])
        weighted += col.weight * pct
    weighted /= sum(c.weight for c in resolved)
    difficulty = np.full(n, np.nan)
    difficulty[rows] = grouped_percentile(weighted, groups)
    drop_column = np.full(n, -1, dtype=np.int64)
    if missing == "drop":
        for j in reversed(range(len(resolved))):  # the first missing column wins
            drop_column[masks[resolved[j].column]] = j
    return DifficultyResult(
        difficulty=difficulty,
        keep=keep,
        drop_column=drop_column,
        columns=resolved,
        missing={c: int(m.sum()) for c, m in masks.items()},
    )
