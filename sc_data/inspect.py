"""Summaries of pairs, scored and staged tables: what is in a file before you train on it.

Works on any step's output: a canonical pairs Parquet, a scored one (``<scorer>__<field>``
columns), or a staged dataset folder (``sc_manifest.json`` + ``data/**.parquet``, every shard
read). Each part of the summary appears only when its columns are present.

Example:
    >>> summary = inspect("pairs.parquet")  # doctest: +SKIP
    >>> summary["rows"], summary["lengths"]["prompt"]["p50"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sc_data.errors import InputError
from sc_data.schema import SCORE_COLUMN_RE, normalised_prompt_key
from sc_data.stage.folder import is_staged, shard_files

PERCENTILES = (5, 50, 95)
MESSAGE_COLUMNS = ("prompt", "chosen", "rejected")


def read_any(path: str | Path) -> pa.Table:
    """A Parquet file, or every ``*.parquet`` under a folder (a staged dataset's ``data/``).

    Shards with differing schemas (an eval shard's null ``tier``) are unified permissively.

    Raises:
        InputError: the path is missing, holds no Parquet, or a file isn't Parquet.
    """
    path = Path(path)
    if path.is_dir():
        if is_staged(path):
            files = shard_files(path)
        else:
            files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
            files = [p for p in files if not p.name.endswith("rejects.parquet")]
        if not files:
            raise InputError(f"folder {path} holds no .parquet files; pass a pairs Parquet or a staged dataset folder")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{path} does not exist; pass a pairs Parquet or a staged dataset folder")
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"can't read {file} as Parquet: {e}") from e
    try:
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"the Parquet files under {path} don't agree on their columns' types ({e})") from e


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}


def message_lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Characters per row of a list<struct<role, content>> column (all messages summed)."""
    array = column.combine_chunks()
    # ``values`` is the whole child array even for a sliced list, so raw offsets index into it.
    contents = pc.struct_field(array.values, "content")
    lengths = pc.fill_null(pc.utf8_length(contents), 0).to_numpy(zero_copy_only=False)
    offsets = array.offsets.to_numpy()
    sums = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return sums[offsets[1:]] - sums[offsets[:-1]]


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = Counter(
        "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in column.to_pylist()
    )
    return dict(sorted(counts.items()))


def _numeric(column: pa.ChunkedArray) -> dict[str, Any]:
    values = np.asarray([v for v in column.to_pylist() if v is not None], dtype=np.float64)
    finite = values[np.isfinite(values)] if values.size else values
    return {
        "min": float(finite.min()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "nulls": column.null_count,
    }


def summarize(table: pa.Table) -> dict[str, Any]:
    """Summary of an in-memory table (see :func:`inspect` for the keys)."""
    names = table.column_names
    out: dict[str, Any] = {
        "rows": table.num_rows,
        "columns": {f.name: str(f.type) for f in table.schema},
    }
    lengths = {}
    for name in MESSAGE_COLUMNS:
        if name in names and _is_messages(table.schema.field(name).type):
            lengths[name] = _percentiles(message_lengths(table.column(name)).astype(np.float64))
    if lengths:
        out["lengths"] = lengths
    if "prompt" in names and _is_messages(table.schema.field("prompt").type):
        turns = pc.fill_null(pc.list_value_length(table.column("prompt")), 0).to_numpy(zero_copy_only=False)
        out["prompt_turns"] = dict(sorted(Counter(int(t) for t in turns).items()))
        keys = Counter(normalised_prompt_key(p) for p in table.column("prompt").to_pylist()
                       if p and all(m["role"] is not None and m["content"] is not None for m in p))
        out["duplicate_prompts"] = sum(n - 1 for n in keys.values() if n > 1)
    if "id" in names and _is_text(table.schema.field("id").type):
        ids = Counter(table.column("id").to_pylist())
        out["duplicate_ids"] = sum(n - 1 for n in ids.values() if n > 1)
    if "categories" in names and _is_list_of(table.schema.field("categories").type, _is_text):
        out["categories"] = dict(sorted(Counter(c for cats in table.column("categories").to_pylist() for c in cats or []).items()))
    if "category" in names:
        out["category"] = _counts(table.column("category"))
    for flag in ("chosen_safe", "rejected_safe"):
        if flag in names:
            out[flag] = _counts(table.column(flag))
    scores = {n: _numeric(table.column(n)) for n in names if SCORE_COLUMN_RE.match(n) and _is_numeric(table, n)}
    if scores:
        out["scores"] = scores
    if "difficulty" in names and _is_numeric(table, "difficulty"):
        out["difficulty"] = _numeric(table.column("difficulty"))
    for name in ("tier", "split"):
        if name in names:
            out[name] = _counts(table.column(name))
    return out


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def _is_list_of(typ: pa.DataType, item: Callable[[pa.DataType], bool]) -> bool:
    return (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and item(typ.value_type)


def _is_messages(typ: pa.DataType) -> bool:
    """Whether a column is a message list (``list<struct<role, content>>`` of text, as sc-data or polars write it):
    the only kind whose lengths and prompt keys are computed."""
    def message(t: pa.DataType) -> bool:
        return pa.types.is_struct(t) and all(t.get_field_index(k) >= 0 and _is_text(t.field(k).type) for k in ("role", "content"))
    return _is_list_of(typ, message)


def _is_numeric(table: pa.Table, name: str) -> bool:
    typ = table.schema.field(name).type
    return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)


def inspect(path: str | Path) -> dict[str, Any]:
    """Summarise a pairs / scored Parquet, a staged dataset folder, or a staged Hub dataset ``ORG/NAME[@REV]``.

    Returns:
        ``rows``; ``columns`` (name -> Arrow type); ``lengths`` (prompt/chosen/rejected characters,
        p5/p50/p95); ``prompt_turns`` (messages per prompt -> rows); ``duplicate_ids`` and
        ``duplicate_prompts`` (rows repeating an earlier id / normalised prompt); ``categories``
        (each category -> pairs carrying it) and ``category`` (primary -> rows, ``null`` included);
        ``chosen_safe`` / ``rejected_safe`` (true/false/null -> rows); ``scores`` (each numeric
        ``<scorer>__<field>`` column -> min/mean/max over finite values and null count);
        ``difficulty`` (min/mean/max); ``tier`` and ``split`` counts; ``path``.

    Raises:
        InputError: the path is missing or not Parquet.
    """
    local = Path(path)
    if not local.exists() and local.suffix.lower() not in (".parquet", ".jsonl", ".json", ".csv") and str(path).count("/") == 1:
        from sc_data.hub import resolve_dataset

        local = resolve_dataset(str(path))  # a Hub dataset ORG/NAME[@REV]: its verified snapshot in the HF cache
    summary = summarize(read_any(local))
    summary["path"] = str(path)
    return summary
