"""``stage``: a scored table -> the staged dataset folder (Parquet shards, manifest, card).

The recipe is :class:`sc_data.stage.config.StageConfig`, the per-row decisions
:func:`sc_data.stage.plan.plan`, the writer :func:`sc_data.stage.export.export`; this module reads
the scored input and ties them together.

Example:
    >>> from sc_data.stage.pipeline import stage
    >>> stage("scored.parquet", "staged", tiers=3, eval_fraction=0.2)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from sc_data.errors import InputError, config_error
from sc_data.io import sha256_file
from sc_data.manifest import upstream_of, upstream_path
from sc_data.stage.config import StageConfig, make_config
from sc_data.stage.export import ExportConfig, export, omitted_parts
from sc_data.stage.folder import claim_output, tier_index
from sc_data.stage.plan import plan


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


def _one_chunk(table: pa.Table) -> pa.Table:
    """``table`` with one chunk per column, combined a column at a time: when nothing else holds ``table``, the copy
    costs one column, not the table. A column already in one chunk is kept (``combine_chunks`` would copy it)."""
    schema = table.schema
    columns = list(table.columns)
    del table
    for i, column in enumerate(columns):
        if column.num_chunks != 1:
            columns[i] = column.combine_chunks()
        del column
    # Hand the freed per-row-group chunks back to the OS now: the allocator would otherwise keep
    # them, and staging's later allocations would come on top (peak 3.5x the table at 300k rows, 3.0x with this).
    pa.default_memory_pool().release_unused()
    return pa.Table.from_arrays(columns, schema=schema)


def _read_parquet(path: Path) -> pa.Table:
    """A Parquet file, or a folder of part files, as a table.

    A file is read with ``pq.ParquetFile``, not ``pq.read_table``: the same table, but each column in
    one chunk (``read_table`` scans through ``pyarrow.dataset``, a chunk per row group or 131,072
    rows), so :func:`_one_chunk` has nothing to copy. A folder needs the dataset's file discovery.
    """
    if path.is_dir():
        return pq.read_table(path)
    with pq.ParquetFile(path) as parquet:
        return parquet.read()


def read_scored(path: Path | str) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
    """Read a scored Parquet file (or folder of part files) and the manifest beside it.

    Returns:
        (table, inputs with sha256, upstream manifest or {}). The upstream manifest is
        ``<stem>.manifest.json`` beside a file, or ``sc_manifest.json`` inside a folder
        (:func:`sc_data.manifest.upstream_of`).

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
        # One chunk per column (a folder reads as a chunk per row group): export takes each shard's rows
        # with one gather, which over a many-chunk table costs ~14x more and grows with the chunks.
        table = _one_chunk(_read_parquet(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot read {str(path)!r} as Parquet ({e}); is it the output of `sc-data score`?") from e
    inputs = [{"path": str(f), "sha256": sha256_file(f), "format": "parquet"} for f in files]
    upstream = upstream_of(path, sha256=None if path.is_dir() else inputs[0]["sha256"])
    found = upstream_path(path)
    if found is not None:
        inputs.append({"path": str(found), "sha256": sha256_file(found), "format": "manifest"})
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
        overwrite: replace an existing ``output`` that sc-data wrote (a staged folder whose manifest
            lists every file in it), atomically swapped at the end; anything else is refused.
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
    claim_output(output, overwrite=overwrite)  # export() checks again when it swaps, but fail before the work
    if isinstance(scored, pa.Table):
        table, inputs, upstream, source = _one_chunk(scored), [], {}, "<table>"
    else:
        table, inputs, upstream = read_scored(scored)
        source = str(scored)
    if table.num_rows == 0:
        raise InputError(f"{source} holds no pairs; nothing to stage (was every row rejected at ingest?)")
    result = plan(table, config, source=source)
    if not sum(len(v) for k, v in result.parts.items() if tier_index(k) is not None):
        raise InputError(
            f"no training pair left to stage from {source}: of {table.num_rows} rows, {result.rejects.num_rows} were left out "
            f"and the rest held out for eval/dev; lower eval_fraction / dev_fraction or raise the budget"
        )
    recipe = {
        "stage": config.model_dump(mode="json"),
        "export": export_config.model_dump(mode="json"),
        "difficulty_columns": [c.model_dump(mode="json") for c in result.difficulty_columns],
        "n_tiers": result.n_tiers,
        "tier_edges": result.tier_edges,
        "missing_scores": result.missing,
        "near_duplicate_merges": result.near_duplicate_merges,
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
        warnings=[*result.warnings, *omitted_parts(result.parts)],
    )
