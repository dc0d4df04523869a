"""Write a staged dataset folder: Parquet shards, rejects, plots, manifest and dataset card.

The layout is :mod:`sc_data.stage.folder`'s; the card is :mod:`sc_data.stage.card`'s. Everything is
written into a temporary folder beside the target and renamed into place at the end, so an
interrupted export never leaves half a dataset under the target's name.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from sc_data.io import (
    PARQUET_COMPRESSION,
    atomic_dir,
    atomic_path,
    finish_swap,
    write_parquet,
    write_text,
)
from sc_data.manifest import STAGED_MANIFEST, file_entry, new_manifest, write_manifest
from sc_data.stage.card import configs, dataset_info, licenses_of, render_card
from sc_data.stage.difficulty import category_codes
from sc_data.stage.folder import CARD, REJECTS, claim_output, part_location, tier_index


class ExportConfig(BaseModel):
    """How the staged dataset is written."""

    model_config = ConfigDict(extra="forbid")

    max_shard_rows: int = Field(
        100_000, ge=1, description="Rows per Parquet shard at most (the Hub prefers files under a few hundred MB)."
    )
    row_group_rows: int = Field(
        10_000, ge=1,
        description="Rows per Parquet row group: small enough for the Hub's viewer and streaming, large enough for zstd.",
    )
    plots: bool = Field(True, description="Render the report plots into plots/ and embed them in the card.")


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, rows written and the manifest's file entries."""

    output: Path
    rows_out: int
    files: list[dict[str, Any]] = field(default_factory=list)


#: Suffix of the folder an export fills beside its target (``.NAME.<random>.staging``).
_STAGING = ".staging"


def _write_shard(table: pa.Table, rows: np.ndarray, path: Path, row_group_rows: int) -> None:
    """Rows ``rows`` of ``table`` as one Parquet file, gathered one row group at a time: the same
    bytes as writing the gathered shard whole, with one row group's copy in memory instead of a shard's."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, table.schema, compression=PARQUET_COMPRESSION) as writer:
        for start in range(0, len(rows), row_group_rows):
            writer.write_table(table.take(pa.array(rows[start:start + row_group_rows], pa.int64())), row_group_size=row_group_rows)
    pa.default_memory_pool().release_unused()  # the gathers' memory back to the OS, not kept under the plots


def _write_parts(
    table: pa.Table, root: Path, parts: Mapping[str, np.ndarray], config: ExportConfig
) -> list[dict[str, Any]]:
    entries = []
    for part, rows in parts.items():
        if not len(rows):
            continue  # an empty shard would break `datasets` (a 0-row row group); the card leaves the part out
        folder, prefix, cfg = part_location(part)
        n_shards = max(1, math.ceil(len(rows) / config.max_shard_rows))
        for i, chunk in enumerate(np.array_split(rows, n_shards)):
            rel = f"{folder}/{prefix}-{i:05d}-of-{n_shards:05d}.parquet"
            _write_shard(table, chunk, root / rel, config.row_group_rows)
            entries.append(file_entry(root, rel, len(chunk), kind="data", config=cfg, split=prefix))
    return entries


def _counts(table: pa.Table, parts: Mapping[str, np.ndarray], rows_rejected: int, rows_in: int) -> dict[str, Any]:
    codes, names = category_codes(table)
    by_split: dict[str, int] = {}
    by_tier: dict[str, int] = {}
    nested: dict[str, dict[str, dict[str, int]]] = {}
    for part, rows in parts.items():
        if not len(rows):
            continue
        _, split, _ = part_location(part)
        is_tier = tier_index(part) is not None
        label = part if is_tier else "none"
        by_split[split] = by_split.get(split, 0) + len(rows)
        if is_tier:
            by_tier[part] = len(rows)
        hist = np.bincount(codes[rows], minlength=len(names))
        nested.setdefault(split, {})[label] = {names[c]: int(hist[c]) for c in np.flatnonzero(hist)}
    return {
        "rows_in": rows_in,
        "rows_out": sum(by_split.values()),
        "rows_rejected": rows_rejected,
        "by_split": by_split,
        "by_tier": by_tier,
        "by_tier_category_split": nested,
    }


def omitted_parts(parts: Mapping[str, np.ndarray]) -> list[str]:
    """A warning per part with no rows: it gets no shard and no place in the card's configs."""
    out = []
    for part, rows in parts.items():
        if len(rows):
            continue
        if tier_index(part) is not None:
            out.append(f"{part} has no rows, so it has no shard and no config in the card; stage with fewer tiers to avoid it")
        elif part == "eval":
            out.append("there is no eval split (eval_fraction 0, or too few prompt groups), so no config has a test split")
        else:
            out.append(f"the {part} split has no rows, so no config has a {part} split")
    return out


def _plot(table: pa.Table, parts: Mapping[str, np.ndarray], folder: Path) -> list[Path]:
    """The report plots of the rows kept in ``parts``, from the few columns they draw (no copy
    when every row is kept: the plots don't depend on the rows' order)."""
    from sc_data.stage.report import plot_table

    kept = np.zeros(table.num_rows, dtype=bool)
    for rows in parts.values():
        kept[rows] = True
    drawn = table.select([c for c in table.column_names if "__" in c or c in ("difficulty", "tier", "split", "category")])
    return plot_table(drawn if kept.all() else drawn.filter(pa.array(kept)), folder)


def export(
    table: pa.Table,
    output: Path | str,
    *,
    parts: Mapping[str, np.ndarray],
    rejects: pa.Table,
    recipe: dict[str, Any],
    inputs: list[dict[str, Any]],
    upstream: Mapping[str, Any] | None = None,
    warnings: list[str] | None = None,
    config: ExportConfig | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the staged dataset folder atomically.

    Args:
        table: every input row with ``difficulty``, ``tier`` and ``split`` (from :func:`sc_data.stage.plan`).
        output: target folder.
        parts: part (``tier_k``, ``eval``, ``dev``) -> row indices of ``table`` in file order.
        rejects: rows left out (rejects schema).
        recipe: resolved configuration, written into the manifest and the card.
        inputs: input files with sha256.
        upstream: the scored file's manifest (scorers, models, licences are copied from it).
        warnings: staging degradations, recorded in the manifest.
        config: sharding options.
        overwrite: replace an existing ``output`` that sc-data wrote (see :func:`sc_data.stage.folder.claim_output`).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ConfigError: ``output`` exists and ``overwrite`` is False, or it holds what sc-data did not write.
    """
    config = config or ExportConfig()
    upstream = dict(upstream or {})
    output = Path(output)
    finish_swap(output)  # a run killed mid-swap: its old folder back first, so the claim sees it
    claim_output(output, overwrite=overwrite)
    for debris in output.parent.glob(f".{output.name}.*{_STAGING}"):  # left by an export that was killed
        shutil.rmtree(debris, ignore_errors=True)
    with atomic_dir(output, suffix=_STAGING) as tmp:
        with ThreadPoolExecutor(1, "sc-stage-plots") as pool:
            # matplotlib holds the GIL, Parquet encoding does not: the plots render while the shards are written.
            pngs = pool.submit(_plot, table, parts, tmp / "plots") if config.plots else None
            files = _write_parts(table, tmp, parts, config)
            info = dataset_info(tmp, configs(parts), files)  # re-reads the shards, also while the plots render
            write_parquet(rejects, tmp / REJECTS)
            files.append(file_entry(tmp, REJECTS, rejects.num_rows, kind="rejects"))
            plots = [png.relative_to(tmp).as_posix() for png in (pngs.result() if pngs else [])]
        files += [file_entry(tmp, rel, 0, kind="plot") for rel in plots]
        counts = _counts(table, parts, rejects.num_rows, table.num_rows)
        if rejects.num_rows:
            reasons = rejects.column("reason").value_counts().to_pylist()
            counts["rejected_by_reason"] = {r["values"]: r["counts"] for r in reasons}
        manifest = new_manifest(
            "staged",
            inputs=inputs,
            recipe=recipe,
            counts=counts,
            files=files,
            licenses=licenses_of(upstream),
            upstream={k: upstream[k] for k in ("kind", "inputs", "counts", "sc_data_version") if k in upstream},
            scorers=upstream.get("scorers", {}),
            models=upstream.get("models", {}),
            warnings=[*(warnings or []), *omitted_parts(parts)],
            **{k: upstream[k] for k in ("decontamination",) if k in upstream},  # what `decontaminate` checked
        )
        write_manifest(manifest, tmp / STAGED_MANIFEST)
        write_text(render_card(manifest, table, parts, plots, dataset_info=info), tmp / CARD)
    return ExportResult(output=output, rows_out=counts["rows_out"], files=files)


