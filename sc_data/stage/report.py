"""Plots of a staged dataset: where the difficulty falls, how categories spread over tiers, and
how the scorers agree.

Rendered with matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it runs
headless and never touches a user's interactive session. ``export`` embeds these PNGs in the card.

Example:
    >>> report("staged/")  # doctest: +SKIP
    [PosixPath('staged_report/difficulty_histogram.png'), ...]
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sc_data.errors import InputError
from sc_data.io import atomic_path, sha256_files, temp_dir_beside
from sc_data.manifest import (
    checked,
    claim_output_files,
    file_entry,
    new_manifest,
    upstream_of,
    write_manifest,
)
from sc_data.stage.difficulty import category_codes, grouped_percentile
from sc_data.stage.folder import shard_files

PLOT_NAMES = ("difficulty_histogram", "category_tier_heatmap", "score_correlation", "score_by_tier")
#: What ``report`` writes beside its PNGs: the manifest that makes them sc-data's to replace.
REPORT_MANIFEST = "report.manifest.json"


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to ``path`` atomically as PNG (no pyplot state; reproducible bytes)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return path


def _score_columns(table: pa.Table) -> list[str]:
    numeric = (pa.types.is_floating, pa.types.is_integer)
    return [
        f.name
        for f in table.schema
        if "__" in f.name and not f.name.endswith("__error") and any(t(f.type) for t in numeric)
    ]


def _tiers(table: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(mask of training rows, their tier, K)."""
    tier = table.column("tier").to_numpy(zero_copy_only=False)
    train = ~np.isnan(tier.astype(np.float64))
    k = int(np.nanmax(tier.astype(np.float64))) + 1 if train.any() else 0
    return train, tier[train].astype(np.int64), k


def _histogram(table: pa.Table, path: Path) -> Path:
    difficulty = table.column("difficulty").to_numpy(zero_copy_only=False)
    train, tier, k = _tiers(table)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 41)
    data = [difficulty[train][tier == t] for t in range(k)]
    if k:
        ax.hist(data, bins=bins, stacked=True, label=[f"tier {t}" for t in range(k)])
    held = ~train
    if held.any():
        ax.hist(difficulty[held], bins=bins, histtype="step", color="black", label="test/dev")
    ax.set(xlabel="difficulty (0 = easiest)", ylabel="pairs", title="Difficulty by tier")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no "3.5 pairs" tick on a small set
    ax.legend(fontsize="small")
    return save_png(fig, path)


def _heatmap(table: pa.Table, path: Path) -> Path:
    """Category (in name order) × tier, coloured by each category's share per tier (rows sum to 1), so a large
    ``unknown`` row does not wash out the others; the cells still print the counts."""
    codes, names = category_codes(table)
    train, tier, k = _tiers(table)
    grid = np.zeros((len(names), max(k, 1)), dtype=np.int64)
    np.add.at(grid, (codes[train], tier), 1)
    by_name = sorted(range(len(names)), key=names.__getitem__)  # rows in name order, whatever the rows' order
    grid, names = grid[by_name], [names[i] for i in by_name]
    share = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 * max(k, 1) + 3, 0.35 * len(names) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(max(k, 1)), [f"tier {t}" for t in range(max(k, 1))])
    ax.set_yticks(range(len(names)), [f"{n} ({grid[i].sum()})" for i, n in enumerate(names)])
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if share[i, j] < 0.6 else "black", fontsize=7)
    ax.set_title("Training pairs: category × tier\n(colour: the category's share in each tier; numbers: pairs)", fontsize=9)
    fig.colorbar(im, ax=ax, label="share of the category's pairs")
    return save_png(fig, path)


def spearman_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Spearman correlation of ``columns`` on the rows where all are present (NaN if < 3 rows)."""
    values = np.column_stack([table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in columns])
    values = values[~np.isnan(values).any(axis=1)]
    if len(values) < 3:
        return np.full((len(columns), len(columns)), np.nan)
    ranks = np.column_stack([grouped_percentile(values[:, j]) for j in range(len(columns))])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(ranks, rowvar=False).reshape(len(columns), len(columns))


def _correlation(table: pa.Table, path: Path) -> Path:
    columns = [*_score_columns(table), "difficulty"]
    corr = spearman_matrix(table, columns)
    fig = Figure(figsize=(1.0 * len(columns) + 3, 0.8 * len(columns) + 2))
    ax = fig.add_subplot()
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(columns)), columns)
    for (i, j), v in np.ndenumerate(corr):
        ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("Spearman correlation of score columns")
    fig.colorbar(im, ax=ax)
    return save_png(fig, path)


def _by_tier(table: pa.Table, path: Path) -> Path:
    """One box plot per score column, in a grid of at most four per row."""
    columns = _score_columns(table) or ["difficulty"]
    train, tier, k = _tiers(table)
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    for j, col in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, j + 1)
        values = table.column(col).cast(pa.float64()).to_numpy(zero_copy_only=False)[train]
        data = [v[~np.isnan(v)] for v in (values[tier == t] for t in range(k))]
        if any(len(d) for d in data):
            ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
            ax.set_xticks(range(1, k + 1), [f"tier {t}" for t in range(k)])
        ax.set_title(col, fontsize=8)
    fig.suptitle("Score distributions by tier")
    return save_png(fig, path)


def plot_table(table: pa.Table, output_dir: Path | str) -> list[Path]:
    """Write the report's PNGs for an in-memory staged table (``difficulty``, ``tier``, ``split``).

    Returns:
        The PNG paths, in :data:`PLOT_NAMES` order.

    Raises:
        InputError: the table lacks ``difficulty`` or ``tier``.
    """
    missing = [c for c in ("difficulty", "tier") if c not in table.column_names]
    if missing:
        raise InputError(f"cannot plot: the table lacks {missing}; it has {table.column_names}. Stage it first")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawers = (_histogram, _heatmap, _correlation, _by_tier)
    return [draw(table, out / f"{name}.png") for draw, name in zip(drawers, PLOT_NAMES, strict=True)]


def _plotted(columns: list[str]) -> list[str]:
    """The columns the report plots: scores (``scorer__column``), difficulty, tier, split, category.

    WHY read only these: the messages, most of a shard's bytes, are never plotted.
    """
    return [c for c in columns if "__" in c or c in ("difficulty", "tier", "split", "category")]


def report(path: Path | str, output_dir: Path | str | None = None, *, overwrite: bool = False) -> list[Path]:
    """Plot a staged folder: difficulty histogram by tier, category × tier heat map, Spearman
    correlation of the score columns, score distributions by tier.

    The PNGs and :data:`REPORT_MANIFEST` (which lists them) are the only files written; anything
    else in ``output_dir`` is left alone.

    Args:
        path: a folder written by ``sc-data stage``.
        output_dir: where the PNGs go (default: ``<path>_report`` beside it, so the staged folder
            itself, whose files the manifest pins, is left untouched).
        overwrite: replace PNGs of an earlier report (only those its manifest lists).

    Returns:
        The PNG paths.

    Raises:
        InputError: ``path`` holds no staged shards, or a shard can't be read.
        ConfigError: a PNG exists without ``overwrite``, or was not written by sc-data.
    """
    root = Path(path)
    shards = shard_files(root)
    table = _read_plotted(root, shards)
    out = Path(output_dir) if output_dir is not None else root.with_name(f"{root.name}_report")
    manifest = out / REPORT_MANIFEST
    claim_output_files([out / f"{name}.png" for name in PLOT_NAMES], manifest, overwrite=overwrite)
    tmp = temp_dir_beside(out, ".report")  # beside, not inside: a killed run leaves nothing in a folder the user chose
    try:
        drawn = plot_table(table, tmp)
        record = checked(new_manifest(
            "report", inputs=[{"path": str(root), "sha256": sha256_files(shards)}], recipe={"step": "report"},
            counts={"rows_in": table.num_rows, "rows_out": table.num_rows, "rows_rejected": 0},
            files=[file_entry(out, png.name, 0, written=png, kind="plot") for png in drawn],
            licenses=list(upstream_of(root).get("licenses", [])),
        ))
        out.mkdir(parents=True, exist_ok=True)
        for png in drawn:
            os.replace(png, out / png.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_manifest(record, manifest)
    return [out / png.name for png in drawn]


def _read_plotted(root: Path, shards: list[Path]) -> pa.Table:
    """The plotted columns of ``shards``, the shards of the staged folder ``root``.

    Raises:
        InputError: no shard, or a shard that can't be read (or whose columns don't agree with the others').
    """
    if not shards:
        raise InputError(f"{str(root)!r} holds no data/*/*.parquet shards; is it a folder written by `sc-data stage`?")
    parts = []
    for shard in shards:
        try:
            parts.append(pq.read_table(shard, columns=_plotted(pq.read_schema(shard).names)))
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"cannot read shard {str(shard)!r} ({e}); `sc-data verify {root}` checks the folder") from e
    try:
        return pa.concat_tables(parts, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"the shards of {str(root)!r} don't agree on their columns ({e}); `sc-data verify {root}` checks the folder") from e
