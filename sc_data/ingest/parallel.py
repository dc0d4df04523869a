"""Plain JSONL inputs in byte ranges: columnar where it applies, in worker processes where it pays.

A plain (uncompressed) JSONL file is cut into byte ranges at line boundaries; each range goes
through the columnar path (:mod:`sc_data.ingest.columnar`) when its format allows, else through
the row path, into finished Arrow batches. The columnar path leaves the row path the rows it can't
compute, and a range it refuses outright (a line that isn't one plain record) is halved until the
row path reads only a small piece around each such line. Results come back in file order with
line numbers made global, so the output, the rejects and the counts are the same as the row-by-row
reader's. How the ranges are spread over the cores was chosen by measurement (2-core dev VM,
bench/RESULTS.md): a format the columnar path reads runs two ranges at once on threads (its Arrow
kernels release the GIL; fork workers, which ship every batch back through a pipe, were slower); a
format read row by row (HH-RLHF transcripts) runs in forked worker processes when the file is at
least :data:`MIN_PARALLEL_BYTES`, there is more than one CPU, Linux (fork), and a core is free
(1.4x faster than one process at load 1.5; 1.13-1.46x slower at load >= 2.6). What needs every row
seen so far (duplicate ids, ``dedup``) runs in the parent over the returned batches, in file order.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from sc_data.ingest import columnar
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.convert import Converted, convert_batch, merged
from sc_data.ingest.formats import make_converter
from sc_data.ingest.readers import DEFAULT_BATCH, UTF8_BOM, _jsonl_batches

MIN_PARALLEL_BYTES = 64 * 2**20
CHUNK_BYTES = 16 * 2**20
#: Byte ranges in flight on threads when no worker processes run (memory: this many ranges).
LOOKAHEAD = 2
#: A refused stretch is halved down to pieces of at least this many lines (:func:`_halves`) ...
MIN_PIECE_LINES = 256
#: ... until its refused halves add up to about this many times its bytes.
HALVING_BUDGET = 4

T = TypeVar("T")
R = TypeVar("R")

#: (lines in the chunk, [(converted batch with chunk-local lines, records read)]) per worker task.
ChunkResult = tuple[int, list[tuple[Converted, int]]]


def workers() -> int:
    """Worker processes to use: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, 8)


def plain_jsonl(path: Path | None, kind: str, compression: str | None) -> bool:
    """Whether an input can be read in byte ranges: an uncompressed JSONL file."""
    return path is not None and kind == "jsonl" and compression is None


def worth_it(path: Path | None, kind: str, compression: str | None, options: IngestOptions) -> bool:
    """Whether worker processes pay off (see the module docstring)."""
    return (
        plain_jsonl(path, kind, compression)
        and workers() > 1 and sys.platform == "linux"
        and path.stat().st_size >= MIN_PARALLEL_BYTES
        and os.getloadavg()[0] <= workers() - 1.5
    )


def chunk_bounds(path: Path, chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` covering the file, each ending just after a newline (or at EOF)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    size = path.stat().st_size
    bounds = []
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            fh.seek(min(start + chunk_bytes, size))
            fh.readline()  # move to the end of the line the cut fell in
            end = min(fh.tell(), size)
            bounds.append((start, end))
            start = end
    return bounds


def _worker_chunk(args: tuple[str, int, int, str, str, IngestOptions]) -> ChunkResult:
    """Worker process: :func:`_parse_chunk` with the cyclic GC off, as in the parent's loop
    (acyclic short-lived rows, freed by refcounting)."""
    gc.disable()
    return _parse_chunk(args)


def _parse_chunk(args: tuple[str, int, int, str, str, IngestOptions]) -> ChunkResult:
    """Parse one byte range; line numbers are 1-based within the range."""
    path, start, end, fmt, source_name, options = args
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    if start == 0 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]  # the file's BOM; one at the start of any other piece is its line's
    controls = columnar.control_bytes(data)
    lines = len(_newlines(data, controls)) + (0 if data.endswith(b"\n") or not data else 1)
    if not columnar.applies(fmt, options):
        return lines, _row_path(data, fmt, source_name, options)
    if (plain := _columnar(data, lines, controls, fmt, source_name, options)) is not None:
        return lines, [(plain, lines)]
    return lines, _halves(data, lines, controls, fmt, source_name, options)


def _newlines(data: bytes, controls: np.ndarray) -> np.ndarray:
    """Where the newlines of ``data`` are, picked from its ``controls`` (:func:`columnar.control_bytes`)."""
    return controls[np.frombuffer(data, np.uint8)[controls] == ord("\n")]


def _columnar(data: bytes, lines: int, controls: np.ndarray, fmt: str, source_name: str, options: IngestOptions) -> Converted | None:
    """The stretch through the columnar path, with the lines it leaves through the row path; None if it refuses the stretch."""
    if (fast := columnar.columnar_chunk(data, lines, controls, source_name, options)) is None:
        return None
    plain, odd = fast
    return merged([plain, _odd_lines(data, controls, odd, fmt, source_name, options)]) if len(odd) else plain


def _halves(data: bytes, lines: int, controls: np.ndarray, fmt: str, source_name: str,
            options: IngestOptions) -> list[tuple[Converted, int]]:
    """A stretch the columnar path refused, in halves: each half it takes, columnar; each it refuses, halved again.

    WHY: one malformed line (a parse error, an extra key) refuses a whole stretch, and the row
    path costs ~6x the columnar one a row; halving confines the row path to a piece of fewer than
    ``2 * MIN_PIECE_LINES`` lines around each such line. Refused attempts cost too (~1-2.5 µs a
    row), so once the halves refused add up to about :data:`HALVING_BUDGET` times the stretch (one
    odd line: about once) the row path reads what is left; and a piece whose first,
    middle and last lines are each refused alone (every row with an extra column) goes to the row
    path at once. ``controls``: where the stretch's bytes below 32 are (each piece's are cut from them).
    """
    budget = HALVING_BUDGET * len(data)

    def pieces(data: bytes, lines: int, controls: np.ndarray) -> list[tuple[Converted, int]]:
        nonlocal budget
        bounds = np.concatenate(([0], _newlines(data, controls) + 1, [len(data)]))  # line k is data[bounds[k]:bounds[k + 1]]
        if (lines < 2 * MIN_PIECE_LINES or budget <= 0
                or not any(columnar.parses(data[bounds[k]:bounds[k + 1]]) for k in (0, lines // 2, lines - 1))):
            return _row_path(data, fmt, source_name, options)
        half = lines // 2
        cut = int(bounds[half])
        split = int(np.searchsorted(controls, cut))
        out: list[tuple[Converted, int]] = []
        for piece, n, offset, piece_controls in ((data[:cut], half, 0, controls[:split]),
                                                 (data[cut:], lines - half, half, controls[split:] - cut)):
            if (plain := _columnar(piece, n, piece_controls, fmt, source_name, options)) is not None:
                part = [(plain, n)]
            else:
                budget -= len(piece)
                part = pieces(piece, n, piece_controls)
            for converted, _ in part:
                converted.shift(offset, "")
            out += part
        return out

    return pieces(data, lines, controls)


def _row_path(data: bytes, fmt: str, source_name: str, options: IngestOptions) -> list[tuple[Converted, int]]:
    """Whole lines through the row path: (converted batch with lines 1-based within ``data``, records read) per batch.

    ``data`` never starts the file as far as a BOM goes (:func:`_parse_chunk` drops the file's): a
    BOM before its first line is that line's, invalid JSON as in one pass.
    """
    convert = make_converter(fmt, source_name, options)
    return [(convert_batch(batch, convert, options, ""), len(batch.rows) + len(batch.rejects))
            for batch in _jsonl_batches(io.BytesIO(data), DEFAULT_BATCH, starts_file=False)]


def _odd_lines(data: bytes, controls: np.ndarray, odd: np.ndarray, fmt: str, source_name: str, options: IngestOptions) -> Converted:
    """The lines of ``data`` at 0-based ``odd`` through the row path, as one batch numbered as in ``data``."""
    newlines = _newlines(data, controls)
    starts = np.concatenate(([0], newlines + 1))[odd].tolist()
    ends = np.concatenate((newlines, [len(data)]))[odd].tolist()
    joined = b"\n".join([data[s:e] for s, e in zip(starts, ends, strict=True)])
    part = merged([converted for converted, _ in _row_path(joined, fmt, source_name, options)])
    part.relined((odd + 1).tolist())
    return part


def _ahead(fn: Callable[[T], R], tasks: list[T], pool: ThreadPoolExecutor) -> Iterator[R]:
    """``map(fn, tasks)`` in order, with up to :data:`LOOKAHEAD` tasks running on ``pool``'s threads.

    A stretch's Arrow and numpy work (parse, checks, message columns, a refused stretch's attempts)
    releases the GIL; its ids' Python pass and the row path hold it: two stretches in flight
    overlap the one with the other. On the 2-core VM (bench/RESULTS.md) that measured no faster on
    clean input but 1.3x faster on input with malformed lines, at 120 MiB more memory.
    """
    pending: deque[Future[R]] = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= LOOKAHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def range_batches(path: Path, fmt: str, source_name: str, spec: str, options: IngestOptions, *,
                  processes: bool) -> Iterator[tuple[Converted, int]]:
    """Yield (converted batch with global line numbers and ``spec`` as source, records read), in file order.

    Args:
        processes: parse the ranges in forked worker processes (see :func:`worth_it`), else on
            threads of this process (:func:`_ahead`).
    """
    tasks = [(str(path), s, e, fmt, source_name, options) for s, e in chunk_bounds(path)]
    # fork: workers start in milliseconds with everything imported, and (unlike spawn and
    # forkserver) never re-import the caller's __main__, so scripts without a __main__ guard, stdin
    # and notebooks work. The workers touch none of the parent's threads' objects (they open their
    # own file and build their own batches), and Arrow and jemalloc re-arm their pools at fork.
    with contextlib.ExitStack() as stack:
        if processes:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers()))
            results: Iterator[ChunkResult] = pool.imap(_worker_chunk, tasks)
        else:
            results = _ahead(_parse_chunk, tasks, stack.enter_context(ThreadPoolExecutor(LOOKAHEAD, "sc-ingest-parse")))
        offset = 0
        for lines, converted_batches in results:
            for converted, records in converted_batches:
                converted.shift(offset, spec)
                yield converted, records
            offset += lines
