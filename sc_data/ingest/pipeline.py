"""The ingest loop: inputs -> detected format -> converted, validated pairs + rejects.

Streams batch by batch (no Python dicts for all rows are ever held), so a million-row JSONL goes
to Parquet in bounded memory. Every input record ends up either in the pairs or in the rejects,
so ``rows_in == rows_out + rows_rejected`` per input and overall. An input with no record, or a run
that keeps no pair at all, is an error rather than an empty dataset (the rejects are still written,
to show why).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from sc_data.errors import InputError
from sc_data.ingest import columnar, parallel
from sc_data.ingest.arrow import output_schema, rejects_to_table
from sc_data.ingest.config import IngestOptions, IngestResult, InputReport, make_options
from sc_data.ingest.convert import Converted, IdLedger, Reject, convert_batch
from sc_data.ingest.formats import check_columns, detect_format, get_format, make_converter
from sc_data.ingest.licences import declared_license
from sc_data.ingest.readers import RawBatch, Source, resolve
from sc_data.ingest.rows import Converter
from sc_data.io import PARQUET_COMPRESSION, atomic_path
from sc_data.manifest import (
    checked,
    claim_output_files,
    file_entry,
    listed_path,
    manifest_path,
    new_manifest,
    write_manifest,
)
from sc_data.schema import REJECT_SCHEMA

Progress = Callable[[int], None]
#: One thread each: hashing inputs and writing Parquet run beside the (GIL-bound) row loop.
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc-ingest-hash")
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc-ingest-write")



def _format_of(rows: list[dict[str, Any]], source: Source, options: IngestOptions, report: InputReport) -> str:
    """The input's layout (given or detected), checked against its columns; recorded in ``report``."""
    fmt = options.format
    if fmt == "auto":
        fmt = detect_format(rows, where=source.spec, column_map=options.column_map)
    check_columns(rows, fmt, where=source.spec, column_map=options.column_map)
    report.format = fmt
    if report.license is None and get_format(fmt).license:  # a declared licence wins (see ingest/licences.py)
        report.license, report.license_from = get_format(fmt).license, f"format {fmt}"
    return fmt


def _detected_batches(source: Source, options: IngestOptions, report: InputReport,
                      fmt: str | None = None) -> Iterator[tuple[RawBatch, Converter]]:
    """Yield the input's batches with the converter of its format (``fmt`` when already detected).

    Batches before the first parsed row are held back until the format is known.

    Raises:
        InputError: the input holds no record, or records were found but not one could be parsed.
    """
    held: list[RawBatch] = []
    seen_any = False
    convert: Converter | None = make_converter(fmt, source.name, options) if fmt is not None else None
    for batch in source.batches():
        seen_any = True
        if convert is None:
            held.append(batch)
            if not batch.rows:
                continue
            convert = make_converter(_format_of(batch.rows, source, options, report), source.name, options)
            for early in held:
                yield early, convert
            held = []
        else:
            yield batch, convert
    if not seen_any:
        raise InputError(f"{source.spec} holds no record: it is empty (or blank lines only); pass a file with data")
    if held:
        parse_failures = sum(len(b.rejects) for b in held)
        first = held[0].rejects[0]
        raise InputError(
            f"no record of {source.spec} could be read: all {parse_failures} failed "
            f"(first: line {first[0]}, {first[2]}). Is it really {source.kind.upper()}?"
        )


def _source_batches(source: Source, options: IngestOptions, report: InputReport) -> Iterator[tuple[Converted, int]]:
    """(converted batch, records read) per batch of one input, in file order."""
    fmt = None
    if parallel.plain_jsonl(source.path, source.kind, source.compression):
        first = next((b.rows for b in source.batches(batch_size=1024) if b.rows), None)
        if first is not None:
            fmt = _format_of(first, source, options, report)  # detected once, whichever path reads the file
            fast = columnar.applies(fmt, options)
            processes = not fast and parallel.worth_it(source.path, source.kind, source.compression, options)
            if processes or fast:
                yield from parallel.range_batches(cast(Path, source.path), fmt, source.name, source.spec, options, processes=processes)
                return
    for batch, convert in _detected_batches(source, options, report, fmt):
        yield convert_batch(batch, convert, options, source.spec), len(batch.rows) + len(batch.rejects)


def resolve_inputs(inputs: Sequence[str | Path | pa.Table | Any], options: IngestOptions) -> list[Source]:
    """Each input resolved, with the dataset selection of ``options`` (split; Hub config, revision, streaming) applied.

    Raises:
        InputError: an input is missing or of an unknown type, or its ``@REV`` contradicts ``options.revision``.
    """
    sources = [resolve(spec, i) for i, spec in enumerate(inputs)]
    for source in sources:
        source.choose(split=options.split, subset=options.subset, revision=options.revision, streaming=options.streaming)
    return sources


def iter_ingest(
    inputs: Sequence[str | Path | pa.Table | Any], options: IngestOptions, reports: list[InputReport], progress: Progress | None = None
) -> Iterator[tuple[pa.RecordBatch | None, list[Reject]]]:
    """Stream (pairs batch, rejects) over all inputs; fills ``reports`` (one per input) as it goes.

    Raises:
        InputError: an input can't be read, its format can't be detected, or a column is missing.
    """
    if not inputs:
        raise InputError("no input given; pass one or more files, folders or dataset names")
    ledger = IdLedger(options.dedup)
    for source in resolve_inputs(inputs, options):
        report = InputReport(path=source.spec, sha256="", format=None)
        report.license, report.license_from = declared_license(source.path, options.license)
        reports.append(report)
        # hashlib releases the GIL: hash the file on the second core while this one parses it.
        digest = _BACKGROUND.submit(source.sha256)
        for converted, records in _source_batches(source, options, report):
            pairs, rejects = ledger.admit(converted, source.spec)
            report.rows_in += records
            report.rows_out += pairs.num_rows if pairs is not None else 0
            report.rows_rejected += len(rejects)
            if progress is not None:
                progress(records)
            yield pairs, rejects
        report.sha256 = digest.result()
        report.hub = source.hub_record()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: the row loop makes millions of short-lived, acyclic containers that
    refcounting frees, and each generation-0 pass over them cost ~40 % of the run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _options(options: IngestOptions | None, kwargs: dict[str, Any]) -> IngestOptions:
    if options is not None and kwargs:
        raise TypeError("pass either options= or keyword options, not both")
    return options if options is not None else make_options(**kwargs)


def ingest_tables(
    inputs: Sequence[str | Path | pa.Table | Any], *, options: IngestOptions | None = None, **kwargs: Any
) -> tuple[pa.Table, pa.Table]:
    """In-memory ingest: ``(pairs, rejects)`` tables, nothing written. For other steps and tests.

    Unlike :func:`ingest`, keeping no pair is not an error here: the caller looks at the rejects.

    Args:
        inputs: files, folders, dataset names (see :func:`sc_data.ingest.ingest`), or in-memory
            ``pyarrow.Table`` / ``datasets.Dataset`` objects.
        options: an :class:`IngestOptions`, or its fields as keyword arguments.

    Example:
        >>> pairs, rejects = ingest_tables(["pairs.jsonl"], safety_pairs="keep")  # doctest: +SKIP
    """
    opts = _options(options, kwargs)
    batches: list[pa.RecordBatch] = []
    rejects: list[Reject] = []
    with _gc_paused():
        for batch, bad in iter_ingest(inputs, opts, []):
            if batch is not None:
                batches.append(batch)
            rejects.extend(bad)
    return pa.Table.from_batches(batches, schema=output_schema(opts.safety_pairs == "flag")), rejects_to_table(rejects)


def ingest(
    inputs: Sequence[str | Path | pa.Table | Any],
    output: str | Path,
    *,
    rejects: str | Path | None = None,
    options: IngestOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    **kwargs: Any,
) -> IngestResult:
    """Read raw preference data, write the canonical pairs Parquet, its rejects and a manifest.

    Args:
        inputs: JSONL / JSON / CSV / Parquet files (gzip or zstd ok), ``save_to_disk`` folders,
            ``datasets.load_dataset`` names, or in-memory ``pyarrow.Table`` / ``datasets.Dataset``.
        output: the pairs Parquet to write (atomically).
        rejects: the rejects Parquet; default ``<output stem>.rejects.parquet`` beside ``output``.
        options: an :class:`IngestOptions`; or pass its fields as keywords (``format``,
            ``column_map``, ``prefer``, ``safety_pairs``, ``dedup``, ``max_chars``, ``split``).
        overwrite: replace outputs that exist (only files an sc-data manifest lists).
        progress: called with the number of records read after each batch.

    Returns:
        An :class:`IngestResult` with the counts (in = out + rejected), by reason and per input.

    Raises:
        InputError: an input can't be read (missing, damaged, empty, unknown format, no usable
            column), or not one pair was kept (the rejects file is still written).
        ConfigError: an option is invalid, or an output exists (see ``overwrite``).

    Example:
        >>> ingest(["hh_rlhf_clean_gpt.jsonl"], "pairs.parquet").rows_out  # doctest: +SKIP
        3969
    """
    opts = _options(options, kwargs)
    started = time.perf_counter()
    output = Path(output)
    rejects_path = Path(rejects) if rejects else output.with_name(f"{output.stem}.rejects.parquet")
    manifest = manifest_path(output)
    claim_output_files([output, rejects_path], manifest, overwrite=overwrite)
    reports: list[InputReport] = []
    by_reason: Counter[str] = Counter()
    with _gc_paused(), atomic_path(rejects_path) as tmp_rej, contextlib.suppress(_NoPair):
        with atomic_path(output) as tmp_out:
            _write(iter_ingest(inputs, opts, reports, progress), tmp_out, tmp_rej, output_schema(opts.safety_pairs == "flag"), by_reason)
            result = IngestResult(
                output=output,
                rejects=rejects_path,
                manifest=manifest,
                rows_in=sum(r.rows_in for r in reports),
                rows_out=sum(r.rows_out for r in reports),
                rows_rejected=sum(r.rows_rejected for r in reports),
                by_reason=dict(by_reason),
                inputs=reports,
                seconds=time.perf_counter() - started,
            )
            if not result.rows_out:
                # the pairs file is dropped; the rejects, which say why, are kept, listed by a
                # manifest so that --overwrite may replace them once the input is fixed
                record = checked(_manifest(result, opts, {rejects_path: tmp_rej}))
                raise _NoPair
            record = checked(_manifest(result, opts, {output: tmp_out, rejects_path: tmp_rej}))
    if not result.rows_out and not _is_input(output, inputs):
        output.unlink(missing_ok=True)  # an earlier run's pairs (claimed above): the manifest no longer lists them
    write_manifest(record, manifest)
    if not result.rows_out:
        reasons = ", ".join(f"{k} {v}" for k, v in by_reason.most_common(3))
        raise InputError(
            f"no usable pair: all {result.rows_in} record(s) were rejected ({reasons}); "
            f"see {rejects_path} for each row's file, line and reason"
        )
    return result


def _is_input(output: Path, inputs: Sequence[str | Path | pa.Table | Any]) -> bool:
    """Whether ``output`` is also one of the input files (an in-place ingest, which a failed run must not delete)."""
    return any(isinstance(i, (str, os.PathLike)) and Path(i).resolve() == output.resolve() for i in inputs)


class _NoPair(Exception):
    """Not one pair was kept: abandon the pairs file."""


def _write(
    batches: Iterator[tuple[pa.RecordBatch | None, list[Reject]]], pairs_path: Path, rejects_path: Path, schema: pa.Schema,
    by_reason: Counter[str],
) -> None:
    """Write the pairs and rejects of ``batches`` as they come."""
    pending: deque[Future[None]] = deque()
    with pq.ParquetWriter(pairs_path, schema, compression=PARQUET_COMPRESSION) as pairs_w, \
            pq.ParquetWriter(rejects_path, REJECT_SCHEMA, compression=PARQUET_COMPRESSION) as rej_w:
        for batch, bad in batches:
            # Parquet encoding and zstd release the GIL: write on the second core, in order,
            # with at most two batches in flight so memory stays bounded.
            if batch is not None:
                pending.append(_WRITER.submit(pairs_w.write_batch, batch))
            if bad:
                pending.append(_WRITER.submit(rej_w.write_table, rejects_to_table(bad)))
                by_reason.update(r[3] for r in bad)
            while len(pending) > 2:
                pending.popleft().result()
        while pending:
            pending.popleft().result()


def _manifest(result: IngestResult, options: IngestOptions, written: dict[Path, Path]) -> dict[str, Any]:
    """The ingest manifest (``sc_data/schemas/manifest.schema.json``, kind ``pairs``).

    ``written``: each file it lists (the pairs and the rejects, or the rejects alone) and where it
    is until it takes its name.
    """
    rows = {result.output: result.rows_out, result.rejects: result.rows_rejected}
    manifest = cast(Path, result.manifest)  # ingest() sets it
    return new_manifest(
        "pairs",
        inputs=[r.to_dict() for r in result.inputs],
        recipe={"step": "ingest", **options.model_dump()},
        counts={
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "rows_rejected": result.rows_rejected,
            "by_reason": dict(sorted(result.by_reason.items())),
        },
        files=[file_entry(manifest.parent, listed_path(final, manifest), rows[final], written=now)
               for final, now in written.items()],
        licenses=sorted({r.license for r in result.inputs if r.license}),
    )
