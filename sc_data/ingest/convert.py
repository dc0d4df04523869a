"""One raw batch -> a canonical Arrow batch and its rejects: convert and validate each row.

Shared by the single-process loop (:mod:`sc_data.ingest.pipeline`) and the fork workers
(:mod:`sc_data.ingest.parallel`), so both give the same pairs, ids and rejects. What needs every
row seen so far (duplicate ids, ``dedup``) is the :class:`IdLedger`'s job, in the main process,
over batches in file order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sc_data.ingest.arrow import pairs_to_batch, raw_excerpt
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.readers import RawBatch
from sc_data.ingest.rows import Converter, RowError
from sc_data.ingest.validate import validate

#: (source_file, line, field, reason, raw): one row of the rejects file (``REJECT_SCHEMA``).
Reject = tuple[str, int | None, str | None, str, str | None]


@dataclass
class Converted:
    """A converted batch: the canonical rows (None if none survived), the rejects, and per kept row
    its line, id and content id (what the :class:`IdLedger` checks).

    The columnar path gives ``lines`` as a ``range`` and ``ids`` and ``contents`` as the one Arrow
    array of its ids: they cross from a fork worker as a few buffers instead of millions of Python
    objects, and the ledger turns them into strings only when it must look at each row.
    """

    pairs: pa.RecordBatch | None
    rejects: list[Reject]
    lines: Sequence[int] = field(default_factory=list)
    ids: Sequence[str] | pa.StringArray = field(default_factory=list)
    contents: Sequence[str] | pa.StringArray = field(default_factory=list)

    def shift(self, offset: int, where: str) -> None:
        """Make chunk-local line numbers global (``offset`` lines precede the chunk) and name the input in the rejects."""
        self.rejects = [(where, line + offset, *rest) for _, line, *rest in self.rejects]
        lines = self.lines
        self.lines = range(lines.start + offset, lines.stop + offset) if isinstance(lines, range) else [line + offset for line in lines]

    def relined(self, numbers: Sequence[int]) -> None:
        """Renumber the rows and rejects: line ``k`` (1-based) becomes ``numbers[k - 1]``."""
        self.rejects = [(where, numbers[line - 1], *rest) for where, line, *rest in self.rejects]
        self.lines = [numbers[line - 1] for line in self.lines]


def merged(parts: Sequence[Converted]) -> Converted:
    """Converted parts of one stretch, each with its own lines, as one batch: rows and rejects in line order."""
    lines = np.concatenate([np.asarray(p.lines, dtype=np.int64) for p in parts])
    in_order = np.argsort(lines, kind="stable")
    order = pa.array(in_order)
    batches = [p.pairs for p in parts if p.pairs is not None and p.pairs.num_rows]
    pairs = pa.concat_batches(batches).take(order) if batches else None  # None, not 0 rows: no empty row group

    def joined(column: Callable[[Converted], Sequence[str] | pa.StringArray]) -> pa.Array:
        return pa.concat_arrays([c if isinstance(c := column(p), pa.Array) else pa.array(c, pa.string()) for p in parts]).take(order)

    ids = joined(lambda p: p.ids)
    # The ledger skips its per-row pass when every id is its content id: keep that visible.
    same = all(p.ids is p.contents or list(p.ids) == list(p.contents) for p in parts)
    contents = ids if same else joined(lambda p: p.contents)
    rejects = sorted((r for p in parts for r in p.rejects), key=lambda r: r[1] or 0)
    return Converted(pairs, rejects, lines[in_order].tolist(), ids, contents)


def convert_batch(batch: RawBatch, convert: Converter, options: IngestOptions, where: str) -> Converted:
    """Convert and validate one raw batch; ``where`` is the input as the user named it, recorded in each reject."""
    pairs, lines, ids, contents = [], [], [], []
    rejects: list[Reject] = [(where, line, fld, reason, raw_excerpt(raw)) for line, fld, reason, raw in batch.rejects]
    max_chars = options.max_chars
    for row, line in zip(batch.rows, batch.lines, strict=True):
        try:
            pair = convert(row)
            pid, content = validate(pair, max_chars)
        except RowError as e:
            rejects.append((where, line, e.field, e.reason, raw_excerpt(row)))
            continue
        pairs.append(pair)
        lines.append(line)
        ids.append(pid)
        contents.append(content)
    if batch.rejects:
        rejects.sort(key=lambda r: r[1])  # parse failures were listed first: back to file order
    table = pairs_to_batch(pairs, ids, flag=options.safety_pairs == "flag") if pairs else None
    return Converted(table, rejects, lines, ids, contents)


class IdLedger:
    """Every id and content kept so far, across inputs, in order.

    A row whose id was already kept with *other* content is rejected as ``duplicate_id`` (two
    pairs can't share an id: training, eval splits and joins key on it); with ``dedup`` a row whose
    content was already kept (under any id) is rejected as ``duplicate``. Ids that are the content
    id itself need no ledger entry: the same such id means the same content. Memory grows with the
    number of distinct source-given ids (and of rows with ``dedup``).
    """

    def __init__(self, dedup: bool) -> None:
        self._content_of: dict[str, str] = {}
        self._contents: set[str] | None = set() if dedup else None

    def _verdict(self, pid: str, content: str) -> str | None:
        if pid != content:
            seen = self._content_of.setdefault(pid, content)
            if seen != content:
                return "duplicate_id"
        if self._contents is not None:
            if content in self._contents:
                return "duplicate"
            self._contents.add(content)
        return None

    def admit(self, converted: Converted, where: str) -> tuple[pa.RecordBatch | None, list[Reject]]:
        """The batch without the rows the ledger refuses, and all the batch's rejects in line order."""
        if converted.pairs is None:
            return None, converted.rejects
        if self._contents is None and converted.ids is converted.contents:
            return converted.pairs, converted.rejects  # every id is its content id: nothing to refuse
        ids, contents = (c.to_pylist() if isinstance(c, pa.Array) else c for c in (converted.ids, converted.contents))
        keep = np.ones(len(ids), dtype=bool)
        extra: list[Reject] = []
        for k, (line, pid, content) in enumerate(zip(converted.lines, ids, contents, strict=True)):
            reason = self._verdict(pid, content)
            if reason is not None:
                keep[k] = False
                extra.append((where, line, "id", reason, json.dumps({"id": pid, "content_id": content})))
        if not extra:
            return converted.pairs, converted.rejects
        rejects = sorted(converted.rejects + extra, key=lambda r: r[1] or 0)
        kept = converted.pairs.filter(pa.array(keep))
        return (kept if kept.num_rows else None), rejects
