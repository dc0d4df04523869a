"""Curriculum staging: difficulty -> eval split -> (dev split) -> budget -> tiers -> export.

With no options it does what the Staged-Competence paper (arXiv 2605.26315) did: difficulty from
the scorers' columns present, 20 % of the pairs held out for evaluation (seed 42), the rest sorted
by difficulty into K=3 equal-count tiers (the last takes the remainder). Every step is vectorised
(numpy / pyarrow): no per-row Python, so a million pairs stage in seconds.

Order matters and is fixed (:func:`plan`): the eval split is held out first (stratified by
difficulty quartile and category, grouped by normalised prompt so no prompt sits on both sides),
then the optional dev split (Cat-DPO's margin controller measures on it), then a budget that keeps
the ``easiest`` / ``hardest`` end, then the tiers, then a ``uniform`` budget within each tier.
The splits and budget live in :mod:`sc_data.stage.split`, the tiering strategies in
:mod:`sc_data.stage.tiers`; this module holds the recipe, the order, and the I/O of :func:`stage`.

Example:
    >>> from sc_data.stage.pipeline import StageConfig, assign
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

from sc_data.errors import ConfigError, InputError, config_error
from sc_data.io import sha256_file
from sc_data.schema import REJECT_SCHEMA, validate_table
from sc_data.stage.difficulty import (
    DifficultyColumn,
    Direction,
    MissingPolicy,
    category_codes,
    compute_difficulty,
    resolve_columns,
)
from sc_data.stage.export import ExportConfig, export
from sc_data.stage.split import (
    DEV,
    EVAL,
    SPLIT_NAMES,
    TRAIN,
    assign_splits,
    budget_from_end,
    budget_within_tiers,
    prompt_group_codes,
)
from sc_data.stage.tiers import StagingWarning, Strategy, Tierer, tiers_by_group


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
        eval_fraction: share of all pairs held out as the ``eval`` split (exported as ``test``),
            in [0, 1) (paper: 0.2).
        dev_fraction: share of all pairs carved from the training side into a ``dev`` split, in
            [0, 1), eval_fraction + dev_fraction < 1 (Cat-DPO measures per-category unsafe rates
            on it; default 0).
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
        raise config_error("staging config", e) from None


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
    tier_edges: list[float] | dict[str, list[float]]
    difficulty_columns: list[DifficultyColumn]
    missing: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def _id_rank(table: pa.Table) -> np.ndarray:
    """Rank of each row's id (ties by position): the deterministic tie-break everywhere."""
    order = pc.sort_indices(table.select(["id"]), sort_keys=[("id", "ascending")]).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _threshold_values(table: pa.Table, config: StageConfig) -> tuple[np.ndarray, str, Direction]:
    """Raw values of ``threshold_column`` (NaN where missing), its name and its direction."""
    try:
        (spec,) = resolve_columns(table.column_names, [DifficultyColumn.parse(config.threshold_column or "")])
    except ConfigError as e:
        raise ConfigError(f"threshold_column: {e}") from e
    raw = table.column(spec.column).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return raw, spec.column, spec.direction


def _tier(
    config: StageConfig,
    values: np.ndarray,
    tie_break: np.ndarray,
    categories: np.ndarray,
    category_names: list[str],
    direction: Direction,
) -> tuple[np.ndarray, int, list[float] | dict[str, list[float]], list[str]]:
    """Tier of each training row, the number of tiers, the edges and the warnings.

    The warnings are collected for the manifest rather than emitted.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StagingWarning)
        if config.stratify == "category":
            tiers, edges, messages = tiers_by_group(
                values,
                categories,
                tie_break,
                names=category_names,
                strategy=config.strategy,
                n_tiers=config.tiers,
                cuts=config.cuts,
            )
            return tiers, config.tiers, edges, messages
        tierer = Tierer(
            config.strategy, n_tiers=config.tiers, cuts=config.cuts, direction=direction, seed=config.seed
        )
        tiers = tierer.fit_transform(values, tie_break)
    return tiers, tierer.n_tiers_, tierer.tier_edges_.tolist(), tierer.warnings_


def plan(table: pa.Table, config: StageConfig | None = None, *, source: str = "<table>") -> Assignment:
    """Decide difficulty, split and tier of every row; see the module docstring for the order.

    Args:
        table: scored pairs (canonical columns + score columns).
        config: the recipe (default: the paper's).
        source: name recorded as ``source_file`` in the rejects.

    Raises:
        InputError: canonical columns missing. ConfigError: see :class:`StageConfig` and
            :func:`sc_data.stage.difficulty.resolve_columns`.
    """
    config = config or StageConfig()
    table = validate_table(table, where=source)
    # Re-staging a staged table recomputes these.
    table = table.drop_columns([c for c in ("difficulty", "tier", "split") if c in table.column_names])
    n = table.num_rows
    diff = compute_difficulty(
        table, config.difficulty_columns or None, per_category=config.per_category, missing=config.missing
    )
    difficulty, keep = diff.difficulty, diff.keep.copy()
    reason = np.full(n, None, dtype=object)
    for j, col in enumerate(diff.columns):
        reason[diff.drop_column == j] = f"missing_score:{col.column}"
    missing = dict(diff.missing)
    tier_values, direction = difficulty, "larger_is_harder"  # difficulty: 0 = easiest
    if config.strategy == "threshold":
        tier_values, column, direction = _threshold_values(table, config)
        absent = np.isnan(tier_values)
        missing.setdefault(column, int(absent.sum()))
        if config.missing == "drop":
            reason[absent & keep] = f"missing_score:{column}"
            keep &= ~absent
        else:
            harder = (config.missing == "hardest") == (direction == "larger_is_harder")
            tier_values = np.where(absent, np.inf if harder else -np.inf, tier_values)
    cats, cat_names = category_codes(table)
    id_rank = _id_rank(table)
    rng = np.random.default_rng(config.seed)

    rows = np.flatnonzero(keep)
    split = np.full(n, -1, dtype=np.int64)
    split[rows] = assign_splits(
        prompt_group_codes(table.column("prompt"))[rows],
        difficulty[rows],
        cats[rows],
        eval_fraction=config.eval_fraction,
        dev_fraction=config.dev_fraction,
        rng=rng,
    )
    train = np.flatnonzero(split == TRAIN)
    if config.budget < 1.0 and config.budget_mode != "uniform":
        dropped = train[budget_from_end(difficulty[train], id_rank[train], config.budget, config.budget_mode)]
        split[dropped], reason[dropped], keep[dropped] = -1, f"budget:{config.budget_mode}", False
        train = np.flatnonzero(split == TRAIN)

    tier = np.full(n, -1, dtype=np.int64)
    tier[train], n_tiers, tier_edges, tier_warnings = _tier(
        config, tier_values[train], id_rank[train], cats[train], cat_names, direction
    )
    if config.budget < 1.0 and config.budget_mode == "uniform":
        dropped = train[budget_within_tiers(tier[train], config.budget, rng)]
        split[dropped], tier[dropped], reason[dropped], keep[dropped] = -1, -1, "budget:uniform", False
        train = np.flatnonzero(split == TRAIN)

    order = np.lexsort((id_rank[train], difficulty[train], tier[train]))
    sorted_train, sorted_tier = train[order], tier[train][order]
    bounds = np.searchsorted(sorted_tier, np.arange(n_tiers + 1))
    parts = {f"tier_{k}": sorted_train[bounds[k] : bounds[k + 1]] for k in range(n_tiers)}
    parts["eval"] = np.flatnonzero(split == EVAL)
    if config.dev_fraction > 0:
        parts["dev"] = np.flatnonzero(split == DEV)

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


def read_scored(path: Path | str) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
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
        **options: :class:`StageConfig` fields and :class:`sc_data.stage.export.ExportConfig` fields
            (``max_shard_rows``, ``row_group_rows``, ``plots``).

    Returns:
        A :class:`StageResult`.

    Raises:
        ConfigError: invalid options or an existing output without ``overwrite``.
        InputError: unreadable input or missing canonical columns.

    Example:
        >>> stage("scored.parquet", "staged", tiers=3, eval_fraction=0.2)  # doctest: +SKIP
    """
    export_keys = set(ExportConfig.model_fields)
    try:
        export_config = ExportConfig(**{k: v for k, v in options.items() if k in export_keys})
    except ValidationError as e:
        raise config_error("export option", e) from None
    config = make_config(config, **{k: v for k, v in options.items() if k not in export_keys})
    output = Path(output)
    if output.exists() and not overwrite:  # export() checks too, but only after the work is done
        raise ConfigError(f"output {str(output)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    if isinstance(scored, pa.Table):
        table, inputs, upstream, source = scored, [], {}, "<table>"
    else:
        table, inputs, upstream = read_scored(scored)
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
    tier_parts = {k: v for k, v in result.parts.items() if k.startswith("tier_")}
    tiers = {k: len(v) for k, v in tier_parts.items()}
    return StageResult(
        output=output,
        rows_in=table.num_rows,
        rows_out=written.rows_out,
        rows_rejected=result.rejects.num_rows,
        tiers=tiers,
        mean_difficulty={k: float(np.mean(difficulty[v])) if len(v) else math.nan for k, v in tier_parts.items()},
        splits={"train": sum(tiers.values()), **{k: len(v) for k, v in result.parts.items() if k not in tier_parts}},
        warnings=result.warnings,
    )
