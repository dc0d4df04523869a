"""Ingest: raw preference data -> the canonical pairs table, with every bad row accounted for.

One module per concern: ``readers`` (files, folders, Hub names), ``formats`` (the registry of
layouts: required columns, detection rule, converter, licence), ``hh_rlhf`` / ``pku`` / ``trl`` /
``mapped`` (one converter per source layout), ``validate`` (row checks and the content id),
``convert`` (one batch: convert, validate, deduplicate), ``arrow`` (columnar batch building),
``parallel`` (fork workers for large files), ``pipeline`` (the loop and the written outputs).
See docs/ARCHITECTURE.md, "The canonical record".

Example:
    >>> from sc_data.ingest import ingest
    >>> result = ingest(["pku.jsonl"], "pairs.parquet", safety_pairs="keep")  # doctest: +SKIP
    >>> result.rows_in == result.rows_out + result.rows_rejected  # doctest: +SKIP
    True
"""

from __future__ import annotations

from sc_data.ingest.config import (
    MAPPABLE_COLUMNS,
    IngestOptions,
    IngestResult,
    InputReport,
    make_options,
    parse_column_map,
)
from sc_data.ingest.formats import FORMAT_NAMES
from sc_data.ingest.pipeline import ingest, ingest_tables

__all__ = [
    "FORMAT_NAMES",
    "MAPPABLE_COLUMNS",
    "IngestOptions",
    "IngestResult",
    "InputReport",
    "ingest",
    "ingest_tables",
    "make_options",
    "parse_column_map",
]
