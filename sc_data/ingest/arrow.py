"""Validated pairs and rejects -> Arrow, in one columnar pass per batch.

Message columns are built from flat role/content arrays plus list offsets instead of from nested
Python dicts: several times faster, and the reason ingest holds its throughput target.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from sc_data.ingest.rows import Pair
from sc_data.schema import MESSAGE_TYPE, REJECT_SCHEMA, pair_schema

#: Longest ``raw`` excerpt kept per reject: enough to find and fix the row, bounded so that a
#: file of 5 MB lines can't blow up the rejects file.
RAW_LIMIT = 2_000


def _messages_array(column: Sequence[tuple[tuple[str, str], ...]]) -> pa.Array:
    if all(len(messages) == 1 for messages in column):
        # One message per row (most rows): comprehensions, no offsets loop.
        offsets: Any = np.arange(len(column) + 1, dtype=np.int32)
        roles = [messages[0][0] for messages in column]
        contents = [messages[0][1] for messages in column]
    else:
        offsets = [0]
        roles, contents = [], []
        for messages in column:
            for role, content in messages:
                roles.append(role)
                contents.append(content)
            offsets.append(len(roles))
    values = pa.StructArray.from_arrays(
        [pa.array(roles, pa.string()), pa.array(contents, pa.string())],
        fields=list(MESSAGE_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


#: The column ``--safety-pairs flag`` adds: ``safe/safe``, ``unsafe/unsafe`` or ``unsafe/safe`` for
#: a pair that is not safe-chosen / unsafe-rejected, null for one that is.
SAFETY_PAIR_COLUMN = "safety_pair"


def output_schema(flag_safety_pairs: bool) -> pa.Schema:
    """The pairs table's schema: canonical, plus :data:`SAFETY_PAIR_COLUMN` when flagging."""
    schema = pair_schema()
    return schema.append(pa.field(SAFETY_PAIR_COLUMN, pa.string())) if flag_safety_pairs else schema


def pairs_to_batch(pairs: Sequence[Pair], ids: Sequence[str], *, flag: bool = False) -> pa.RecordBatch:
    """Build a canonical RecordBatch (:func:`output_schema`) from validated pairs and their ids."""
    _, prompts, chosens, rejecteds, cats, cat, sources, c_safe, r_safe, safety = zip(*pairs, strict=True)
    arrays = [
        pa.array(ids, pa.string()),
        _messages_array(prompts),
        _messages_array(chosens),
        _messages_array(rejecteds),
        pa.array(cats, pa.list_(pa.string())),
        pa.array(cat, pa.string()),
        pa.array(sources, pa.string()),
        pa.array(c_safe, pa.bool_()),
        pa.array(r_safe, pa.bool_()),
    ]
    if flag:
        arrays.append(pa.array(safety, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=output_schema(flag))


def raw_excerpt(raw: Any) -> str | None:
    """The offending row as text, cut to :data:`RAW_LIMIT` characters."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            raw = repr(raw)
    if len(raw) > RAW_LIMIT:
        raw = raw[:RAW_LIMIT] + f"... [{len(raw) - RAW_LIMIT} more characters]"
    if not raw.isascii():  # a lone surrogate can't be stored: keep it visible as its escape
        raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw


def rejects_to_table(rejects: Sequence[tuple[str, int | None, str | None, str, str | None]]) -> pa.Table:
    """Build a rejects table (``REJECT_SCHEMA``) from (source_file, line, field, reason, raw)."""
    columns = list(zip(*rejects, strict=True)) if rejects else [[]] * len(REJECT_SCHEMA)
    return pa.table(
        [pa.array(col, field.type) for col, field in zip(columns, REJECT_SCHEMA, strict=True)],
        schema=REJECT_SCHEMA,
    )
