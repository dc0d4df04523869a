"""The canonical pair record, built from ``sc_data/schemas/*.json``, and the harm-category taxonomy.

The JSON Schemas are the single source of truth: the Arrow schema every step writes is derived
from ``pair.schema.json`` so the two can't drift. See docs/ARCHITECTURE.md, "The canonical record".
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import pyarrow as pa

from sc_data.errors import InputError, ScDataError

SCHEMA_VERSION = "1"

#: Score columns are ``<scorer>__<field>``: double underscore, no dots (dots break pandas,
#: SQL engines and some ``datasets`` paths).
SCORE_COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]*?__[a-z][a-z0-9_]*$")

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)

#: Columns of the rejects file: where the row came from and why it was refused.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=True),
        pa.field("field", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=True),
    ]
)


@functools.cache
def load_json_schema(name: str) -> dict[str, Any]:
    """Load one of the bundled JSON Schemas (``pair``, ``scored``, ``manifest``, ``taxonomy``)."""
    filename = "taxonomy.json" if name == "taxonomy" else f"{name}.schema.json"
    text = resources.files("sc_data.schemas").joinpath(filename).read_text("utf-8")
    return json.loads(text)


def _arrow_type(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[pa.DataType, bool]:
    """Map one JSON-Schema property to (Arrow type, nullable)."""
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        return _arrow_type({**target, **{k: v for k, v in prop.items() if k != "$ref"}}, defs)
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    nullable = "null" in types
    (kind,) = [t for t in types if t != "null"]
    if kind == "string":
        return pa.string(), nullable
    if kind == "boolean":
        return pa.bool_(), nullable
    if kind == "integer":
        return pa.int64(), nullable
    if kind == "number":
        return pa.float64(), nullable
    if kind == "array":
        item_type, _ = _arrow_type(prop["items"], defs)
        return pa.list_(item_type), nullable
    if kind == "object":
        fields = [pa.field(k, _arrow_type(v, defs)[0]) for k, v in prop["properties"].items()]
        return pa.struct(fields), nullable
    raise ScDataError(f"schema type {kind!r} has no Arrow equivalent")


@functools.cache
def pair_schema() -> pa.Schema:
    """The Arrow schema of the canonical pairs table, in on-disk column order."""
    spec = load_json_schema("pair")
    fields = []
    for name, prop in spec["properties"].items():
        typ, nullable = _arrow_type(prop, spec["$defs"])
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


PAIR_COLUMNS: tuple[str, ...] = tuple(pair_schema().names)


def score_column(scorer: str, field: str) -> str:
    """Name of a score column: ``score_column("ref_margin", "margin_mean") -> "ref_margin__margin_mean"``."""
    name = f"{scorer}__{field}"
    if not SCORE_COLUMN_RE.match(name):
        raise ScDataError(
            f"score column {name!r} is not of the form <scorer>__<field> in lower snake case "
            "(letters, digits, underscores; no dots)"
        )
    return name


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def normalised_prompt_key(prompt: Sequence[dict[str, str]]) -> str:
    """Key that groups prompts which differ only in case, spacing or Unicode form."""
    parts = [f"{m['role']}:{' '.join(_normalise(m['content']).lower().split())}" for m in prompt]
    return "\n".join(parts)


def validate_table(table: pa.Table, *, where: str = "table") -> pa.Table:
    """Check ``table`` carries the canonical columns with the canonical types; return it cast.

    Extra columns (score columns, difficulty, tier, split) are kept. Null-typed columns are refused
    anywhere, since Parquet readers disagree on what they mean.

    Raises:
        InputError: a canonical column is missing or can't be cast, or a column is null-typed.
    """
    missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"{where} lacks the canonical column(s) {missing}; it has {table.column_names}. "
            "Run `sc-data ingest` first to make a canonical pairs table."
        )
    null_typed = [f.name for f in table.schema if pa.types.is_null(f.type)]
    if null_typed:
        raise InputError(
            f"{where} has null-typed column(s) {null_typed}: give them a concrete type "
            "(e.g. cast to string or float64) before writing"
        )
    schema = pair_schema()
    columns = []
    for name in table.column_names:
        col = table.column(name)
        if name in PAIR_COLUMNS:
            target = schema.field(name).type
            if not col.type.equals(target):
                try:
                    col = col.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise InputError(
                        f"{where}: column {name!r} has type {col.type}, expected {target}"
                    ) from e
            if not schema.field(name).nullable and col.null_count:
                raise InputError(f"{where}: column {name!r} has {col.null_count} null value(s)")
        columns.append(col)
    fields = [
        schema.field(name) if name in PAIR_COLUMNS else table.schema.field(name)
        for name in table.column_names
    ]
    out = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    ordered = list(PAIR_COLUMNS) + [c for c in table.column_names if c not in PAIR_COLUMNS]
    return out.select(ordered)


def empty_pairs_table() -> pa.Table:
    """A zero-row canonical table (keeps types when every input row was rejected)."""
    return pair_schema().empty_table()


# ----------------------------------------------------------------------------- taxonomy


@functools.cache
def taxonomy() -> dict[str, Any]:
    """The taxonomy file: ``categories`` in priority order and ``mappings`` per source."""
    return load_json_schema("taxonomy")


@functools.cache
def category_names() -> tuple[str, ...]:
    """Toolkit category names in priority order (most severe first); ``unknown`` last."""
    return tuple(c["name"] for c in taxonomy()["categories"])


def map_categories(source_labels: Iterable[str], vocabulary: str) -> list[str]:
    """Map a source's labels (e.g. PKU-SafeRLHF's) to toolkit categories, deduplicated, in priority order.

    Raises:
        ScDataError: ``vocabulary`` is unknown or a label isn't in its mapping.
    """
    mappings = taxonomy()["mappings"]
    if vocabulary not in mappings:
        raise ScDataError(f"unknown category vocabulary {vocabulary!r}; valid: {sorted(mappings)}")
    mapping = mappings[vocabulary]
    out = set()
    for label in source_labels:
        if label in category_names():
            out.add(label)
        elif label in mapping:
            out.add(mapping[label])
        else:
            raise ScDataError(
                f"harm category {label!r} is not in the {vocabulary} mapping; known: {sorted(mapping)}"
            )
    order = {name: i for i, name in enumerate(category_names())}
    return sorted(out, key=order.__getitem__)


def primary_category(categories: Sequence[str]) -> str | None:
    """The first of ``categories`` in the taxonomy's priority order, or None if there are none."""
    if not categories:
        return None
    order = {name: i for i, name in enumerate(category_names())}
    return min(categories, key=lambda c: order.get(c, len(order)))
