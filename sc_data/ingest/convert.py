"""One raw batch -> a canonical Arrow batch and its rejects: convert, validate, deduplicate.

Shared by the single-process loop (:mod:`sc_data.ingest.pipeline`) and the fork workers
(:mod:`sc_data.ingest.parallel`), so both give the same pairs, ids and rejects.
"""

from __future__ import annotations

import pyarrow as pa

from sc_data.ingest.arrow import pairs_to_batch, raw_excerpt
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.readers import RawBatch
from sc_data.ingest.rows import Converter, RowError
from sc_data.ingest.validate import validate

#: (source_file, line, field, reason, raw): one row of the rejects file (``REJECT_SCHEMA``).
Reject = tuple[str, int | None, str | None, str, str | None]


def convert_batch(
    batch: RawBatch, convert: Converter, options: IngestOptions, seen: set[str] | None, where: str
) -> tuple[pa.RecordBatch | None, list[Reject]]:
    """Convert and validate one raw batch: (canonical batch or None if no row survived, rejects).

    ``seen`` holds the ids kept so far when deduplicating (None otherwise); ``where`` is the
    input as the user named it, recorded in each reject.
    """
    pairs, ids = [], []
    rejects: list[Reject] = [(where, line, fld, reason, raw_excerpt(raw)) for line, fld, reason, raw in batch.rejects]
    max_chars = options.max_chars
    for row, line in zip(batch.rows, batch.lines, strict=True):
        try:
            pair = convert(row)
            pid = validate(pair, max_chars)
        except RowError as e:
            rejects.append((where, line, e.field, e.reason, raw_excerpt(row)))
            continue
        if seen is not None:
            if pid in seen:
                rejects.append((where, line, "id", "duplicate", raw_excerpt(row)))
                continue
            seen.add(pid)
        pairs.append(pair)
        ids.append(pid)
    if batch.rejects:
        rejects.sort(key=lambda r: r[1])  # parse failures were listed first: back to file order
    return (pairs_to_batch(pairs, ids) if pairs else None), rejects
