"""Input files, folders and Hub names -> batches of raw rows (dicts), streamed.

Supported: JSONL, JSON (an array, or ``{"data": [...]}``), CSV, Parquet, a ``datasets``
``save_to_disk`` folder, and a Hub dataset ``ORG/NAME[@REV]`` read through ``datasets`` (its
config, split, revision and streaming chosen by :meth:`Source.choose`; offline, the local
``datasets`` cache serves it). gzip and zstd compression is recognised by magic bytes (any extension).

JSONL is read line by line so a bad line (truncated JSON, invalid UTF-8, not an object) becomes a
reject with its line number instead of failing the file; blank lines are skipped and not counted,
and a UTF-8 byte-order mark before the first line is dropped. ``line`` is the physical line for
JSONL and the 1-based record number for every other format.

A fault of the file itself (truncated or corrupt compression, unreadable bytes, a file with no
record at all) is one :class:`~sc_data.errors.InputError` naming the file and how far reading got.
A ``datasets`` ``DatasetDict`` (on disk or on the Hub) is read one split at a time: ``split`` names
it, and several splits are never merged (an upstream test split must not leak into training).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa

from sc_data.errors import InputError
from sc_data.io import sha256_file, sha256_files

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSED_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
KIND_BY_SUFFIX = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
}
DEFAULT_BATCH = 16_384
UTF8_BOM = b"\xef\xbb\xbf"
#: What a damaged file raises while it is read (truncated or corrupt gzip / zstd, unreadable bytes).
_FILE_FAULTS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, UnicodeDecodeError, pa.ArrowInvalid)


@dataclass
class RawBatch:
    """Rows parsed from one stretch of an input, with their line numbers, and the lines that failed.

    ``rejects`` holds ``(line, field, reason, raw)`` for records that could not be parsed at all.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejects: list[tuple[int, str | None, str, str | None]] = field(default_factory=list)


@dataclass
class Source:
    """One resolved input: what it is and how to read it.

    A Hub dataset's ``name`` is its repo id; ``subset``, ``revision`` and ``streaming`` apply to
    Hub datasets only, ``split`` to every ``DatasetDict``; ``split_read`` is the split read.
    """

    spec: str
    name: str
    kind: str
    path: Path | None = None
    compression: str | None = None
    data: Any = None
    split: str | None = None
    subset: str | None = None
    revision: str | None = None
    streaming: bool = False
    split_read: str | None = None
    _builder: Any = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def choose(self, *, split: str | None, subset: str | None = None, revision: str | None = None,
               streaming: bool = False) -> None:
        """Set what to read of a dataset: the split, and of a Hub dataset its config, revision and streaming.

        Raises:
            InputError: ``revision`` differs from the ``@REV`` the spec already names.
        """
        self.split = split
        if self.kind != "hub":
            return
        if revision is not None and self.revision is not None and revision != self.revision:
            raise InputError(
                f"{self.spec} names revision {self.revision!r} and --revision is {revision!r}; give the revision once "
                f"(either {self.name}@REV or --revision REV)"
            )
        self.revision = self.revision or revision
        self.subset, self.streaming = subset, streaming

    def hub_record(self) -> dict[str, Any] | None:
        """What was read of a Hub dataset, for the manifest: repo id, config, split, revision, commit, streaming."""
        if self.kind != "hub":
            return None
        builder = _hub_builder(self)
        return {
            "repo_id": self.name, "config": builder.config.name, "split": self.split_read, "revision": self.revision,
            "commit": builder.hash, "streaming": self.streaming,
        }

    def sha256(self) -> str:
        """sha256 of the file; of a folder, over its files' names and hashes; of a Hub dataset, over
        its repo id and the commit read (a git commit fixes every file); of an in-memory table, over
        its Arrow IPC stream."""
        if self.kind == "memory":
            return _hash_tables(_tables_of(self.data))
        if self.kind == "hub":
            return hashlib.sha256(f"datasets/{self.name}@{_hub_builder(self).hash}".encode()).hexdigest()
        path = cast(Path, self.path)  # every non-hub source has one
        if path.is_dir():
            return sha256_files(p for p in sorted(path.rglob("*")) if p.is_file())
        return sha256_file(path)

    def batches(self, batch_size: int = DEFAULT_BATCH) -> Iterator[RawBatch]:
        """Stream the input as :class:`RawBatch` es of at most ``batch_size`` rows.

        Raises:
            InputError: the file is damaged (truncated or corrupt compression, unreadable), naming
                it and the last record read; nothing read from it is kept.
        """
        reached = 0
        try:
            for batch in self._batches(batch_size):
                reached = max([reached, *batch.lines, *(r[0] for r in batch.rejects)])
                yield batch
        except _FILE_FAULTS + _zstd_errors() as e:
            what = f"{self.compression} stream" if self.compression else "file"
            raise InputError(
                f"can't read {self.spec}: the {what} is truncated or corrupt after record {reached} "
                f"({type(e).__name__}: {e}). Nothing from it was written; re-download or re-create the file"
            ) from e

    def _batches(self, batch_size: int) -> Iterator[RawBatch]:
        if self.kind == "jsonl":
            with _open(self) as fh:
                yield from _jsonl_batches(fh, batch_size)
        elif self.kind == "json":
            yield from _rows_batches(_json_rows(self), batch_size)
        elif self.kind == "csv":
            yield from _table_batches(_csv_table(self), batch_size)
        elif self.kind == "parquet":
            yield from _parquet_batches(self, batch_size)
        elif self.kind == "memory":
            yield from _dataset_batches(self.data, batch_size, self)
        elif self.kind == "disk":
            yield from _dataset_batches(_load_disk(self.path), batch_size, self)
        else:
            yield from _dataset_batches(_hub_dataset(self), batch_size, self)


def _tables_of(data: Any) -> list[pa.Table]:
    if isinstance(data, pa.Table):
        return [data]
    splits = data.values() if hasattr(data, "keys") else [data]
    return [split.with_format("arrow")[:] for split in splits]


def _hash_tables(tables: list[pa.Table]) -> str:
    digest = hashlib.sha256()
    for table in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue())
    return digest.hexdigest()


def _sniff_compression(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


@functools.cache
def _zstd_errors() -> tuple[type[BaseException], ...]:
    try:
        import zstandard
    except ImportError:
        return ()
    return (zstandard.ZstdError,)


class _ZstdReader(io.RawIOBase):
    """zstd frames decompressed as read; unlike zstandard's stream reader, a file that ends inside
    a frame (a truncated download) raises EOFError instead of quietly yielding what it had."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False
        self._buf = bytearray()

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf:
            data = self._raw.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise EOFError("the zstd stream ended inside a frame")
                return
            while data:
                self._in_frame = True
                self._buf += self._frame.decompress(data)
                if not self._frame.eof:
                    break
                data, self._frame, self._in_frame = self._frame.unused_data, self._dctx.decompressobj(), False

    def readinto(self, buffer: Any) -> int:
        self._fill()
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        del self._buf[:n]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open(source: Source) -> IO[bytes]:
    path = cast(Path, source.path)
    if source.compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if source.compression == "zstd":
        return io.BufferedReader(_ZstdReader(open(path, "rb")))  # the raw file closes with the reader
    return open(path, "rb")


def resolve(spec: str | Path | Any, index: int = 0) -> Source:
    """Decide what an input is: a file (and its format and compression), a folder, a Hub name
    (``ORG/NAME[@REV]``), or an in-memory ``pyarrow.Table`` / ``datasets.Dataset`` / ``DatasetDict`` (named ``<table N>``).

    Raises:
        InputError: a missing file, a folder that isn't a saved dataset, an unknown file type.
    """
    if isinstance(spec, pa.Table) or hasattr(spec, "with_format"):
        name = f"<table {index}>"
        return Source(name, name, "memory", data=spec)
    if not isinstance(spec, (str, Path)):
        raise InputError(
            f"input {index} is a {type(spec).__name__}; pass a path, a dataset name, a pyarrow.Table "
            "or a datasets.Dataset"
        )
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
            path / "state.json"
        ).exists():
            return Source(text, path.name, "disk", path)
        raise InputError(
            f"input folder {text} is not a `datasets` save_to_disk folder (no dataset_info.json, "
            "dataset_dict.json or state.json); pass its data files instead"
        )
    if path.is_file():
        compression = _sniff_compression(path)
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
            suffixes = suffixes[:-1]
        kind = KIND_BY_SUFFIX.get(suffixes[-1]) if suffixes else None
        source = Source(text, path.name, kind or "", path, compression)
        if kind is None:
            source.kind = _sniff_kind(source)
        elif kind == "json":
            source.kind = _json_or_jsonl(source)
        return source
    looks_like_path = path.suffix.lower() in {*KIND_BY_SUFFIX, *COMPRESSED_SUFFIXES} or text.startswith(
        (".", "/", "~")
    )
    if looks_like_path:
        raise InputError(f"input file {text} does not exist; check the path")
    name, _, revision = text.partition("@")
    return Source(text, name, "hub", revision=revision or None)


def _sniff_kind(source: Source) -> str:
    with _open(source) as fh:
        head = fh.read(4096)
    stripped = head.lstrip()
    if head.startswith(b"PAR1"):
        return "parquet"
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    raise InputError(
        f"can't tell the file type of {source.spec}: give it one of the extensions "
        f"{sorted(KIND_BY_SUFFIX)} (optionally followed by .gz or .zst)"
    )


def _json_or_jsonl(source: Source) -> str:
    """``.json`` files are often JSON Lines; a file of one top-level value per line is JSONL."""
    with _open(source) as fh:
        first = fh.readline()
        second = fh.readline()
    if first.lstrip().startswith(b"{") and second.strip():
        try:
            json.loads(first)
            return "jsonl"
        except ValueError:
            return "json"
    return "json"


def _jsonl_batches(fh: IO[bytes], batch_size: int, *, starts_file: bool = True) -> Iterator[RawBatch]:
    """Lines of ``fh`` as raw batches; a BOM before the first line is dropped only when ``fh`` starts
    the file (a piece cut from inside it keeps a BOM line's BOM, which makes that line invalid JSON)."""
    batch = RawBatch()
    rows, lines, rejects = batch.rows, batch.lines, batch.rejects
    loads = json.loads
    # The decoder's C scanner, called directly: json.loads adds two regex passes per line.
    scan = json.JSONDecoder().scan_once
    for number, raw in enumerate(fh, 1):
        if number == 1 and starts_file and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append((number, None, "invalid_utf8", raw.decode("utf-8", "replace")))
            continue
        try:
            obj, end = scan(text, 0)
            if end != len(text) and text[end:].strip():
                raise ValueError("extra data")
        except (StopIteration, ValueError):
            # Not a bare object at column 0 (leading spaces, a blank line) or bad JSON: let the
            # full parser decide.
            try:
                obj = loads(text)
            except ValueError:
                if text.strip():
                    rejects.append((number, None, "invalid_json", text))
                continue
        if type(obj) is not dict:
            rejects.append((number, None, "not_an_object", text))
            continue
        rows.append(obj)
        lines.append(number)
        if len(rows) >= batch_size:
            yield batch
            batch = RawBatch()
            rows, lines, rejects = batch.rows, batch.lines, batch.rejects
    if rows or rejects:
        yield batch


def _json_rows(source: Source) -> list[Any]:
    with _open(source) as fh:
        data = fh.read()
    try:
        obj = json.loads(data.removeprefix(UTF8_BOM))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{source.spec} is not valid JSON ({e}); fix the file or save it as JSONL") from e
    if isinstance(obj, dict):
        # {"data": [...]} wraps the records; any other object is a single record (a one-line JSONL).
        return obj["data"] if isinstance(obj.get("data"), list) else [obj]
    if isinstance(obj, list):
        return obj
    raise InputError(
        f"{source.spec} holds a JSON {type(obj).__name__}; expected an array of records or "
        '{"data": [...]}'
    )


def _rows_batches(records: list[Any], batch_size: int) -> Iterator[RawBatch]:
    for start in range(0, len(records), batch_size):
        batch = RawBatch()
        for number, obj in enumerate(records[start : start + batch_size], start + 1):
            if isinstance(obj, dict):
                batch.rows.append(obj)
                batch.lines.append(number)
            else:
                batch.rejects.append((number, None, "not_an_object", json.dumps(obj, default=str)))
        yield batch


def _table_batches(table: pa.Table, batch_size: int, offset: int = 0) -> Iterator[RawBatch]:
    for record_batch in table.to_batches(max_chunksize=batch_size):
        rows = record_batch.to_pylist()
        yield RawBatch(rows, list(range(offset + 1, offset + 1 + len(rows))))
        offset += len(rows)


def _csv_table(source: Source) -> pa.Table:
    import pyarrow.csv as pacsv

    try:
        with _open(source) as fh:
            return pacsv.read_csv(fh)
    except pa.ArrowInvalid as e:
        raise InputError(f"can't read CSV file {source.spec}: {e}") from e


def _parquet_batches(source: Source, batch_size: int) -> Iterator[RawBatch]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"can't read Parquet file {source.spec}: {e}") from e
    offset = 0
    for record_batch in parquet.iter_batches(batch_size=batch_size):
        rows = record_batch.to_pylist()
        yield RawBatch(rows, list(range(offset + 1, offset + 1 + len(rows))))
        offset += len(rows)


def _load_disk(path: Path | None) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(f"can't load the saved dataset folder {path}: {e}") from e


def _hub_builder(source: Source) -> Any:
    """The ``datasets`` builder of a Hub input, made once (hashing and reading run on two threads).

    ``builder.hash`` is the commit datasets resolved the revision to (offline: the cached one's).
    """
    import datasets

    with source._lock:
        if source._builder is None:
            try:
                builder = datasets.load_dataset_builder(source.name, source.subset, revision=source.revision)
            except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "can't serve it"
                raise _hub_error(source, e) from e
            _check_offline_revision(source, builder.hash)
            source._builder = builder
        return source._builder


def _check_offline_revision(source: Source, served: str) -> None:
    """Offline, refuse a build of another commit than the revision asked for.

    WHY: offline, ``datasets`` serves its latest cached build of a dataset whatever the revision
    (it logs "Using the latest cached version"), so ``NAME@v1`` read main's rows under v1's name.
    The revision's commit comes from the Hub cache's refs (a tag or branch) or is the revision
    itself (a commit id).

    Raises:
        InputError: the build served is not the revision's commit, or the cache can't say which it is.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE or source.revision is None or source.revision == served:
        return
    card = try_to_load_from_cache(source.name, "README.md", revision=source.revision, repo_type="dataset")
    snapshot = Path(card).parent if isinstance(card, str) else None
    if snapshot is not None and snapshot.name == served:
        return
    commit = f" (commit {snapshot.name})" if snapshot is not None else ""
    where = f", such as its files in the Hub cache: {snapshot}" if snapshot is not None else ""
    raise InputError(
        f"input {source.spec!r}: HF_HUB_OFFLINE is set, and offline datasets serves only its latest cached build "
        f"(commit {served}), not revision {source.revision!r}{commit}; unset HF_HUB_OFFLINE to read that revision, "
        f"or pass local files{where}"
    )


def _hub_dataset(source: Source) -> dict[str, Any]:
    """A Hub input's split, streamed (an IterableDataset) or downloaded, prepared and memory-mapped.

    The split is chosen from the builder's data files (or cached split info) before anything is
    downloaded, so a refusal (no --split, an unknown one) costs no download.
    """
    builder = _hub_builder(source)
    names = list(getattr(builder.config, "data_files", None) or builder.info.splits or [])
    split = _pick_split(names, source) if names else source.split
    try:
        if source.streaming:
            return _by_split(builder.as_streaming_dataset(split=split), split)
        builder.download_and_prepare()
        return _by_split(builder.as_dataset(split=split), split)
    except Exception as e:  # noqa: BLE001 - as above
        raise _hub_error(source, e) from e


def _by_split(dataset: Any, split: str | None) -> Any:
    """``{split: dataset}`` for one split read, so it is picked and recorded like a DatasetDict's."""
    return dataset if split is None else {split: dataset}


def _hub_error(source: Source, e: Exception) -> InputError:
    """One line for a Hub input ``datasets`` could not serve: offline and not cached, unreachable, or what it said."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and isinstance(e, ConnectionError):
        return InputError(
            f"input {source.spec!r}: HF_HUB_OFFLINE is set and this Hub dataset is not in the local datasets cache; "
            "unset HF_HUB_OFFLINE (or set it to 0) to download it, or pass a local file"
        )
    if isinstance(e, ConnectionError):
        return InputError(
            f"input {source.spec!r}: can't reach the Hub ({e}); check your network and HF_ENDPOINT, or pass a local file"
        )
    return InputError(
        f"input {source.spec!r} is not a file or folder, and datasets can't load it as a Hub dataset "
        f"({type(e).__name__}: {e}); check the name, --subset, --split and --revision"
    )


def _dataset_batches(dataset: Any, batch_size: int, source: Source) -> Iterator[RawBatch]:
    """One split of a Dataset / DatasetDict (or a Table); a DatasetDict's splits are never merged."""
    if isinstance(dataset, pa.Table):
        yield from _table_batches(dataset, batch_size)
        return
    if hasattr(dataset, "keys"):
        source.split_read = _pick_split(list(dataset.keys()), source)
        dataset = dataset[source.split_read]
    elif source.split is not None:
        raise InputError(f"--split {source.split!r}: {source.spec} is a single dataset without named splits; drop --split")
    offset = 0
    # A streamed (Iterable) dataset yields the same Arrow tables, one batch at a time, so memory stays flat.
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from _table_batches(table, batch_size, offset)
        offset += table.num_rows


def _pick_split(splits: list[str], source: Source) -> str:
    """The split of a DatasetDict to read: the one asked for, or the only one there is.

    Raises:
        InputError: the split asked for is absent, or several exist and none was asked for.
    """
    if source.split is not None:
        if source.split not in splits:
            raise InputError(f"{source.spec} has no split {source.split!r}; its splits are {splits}")
        return source.split
    if len(splits) != 1:
        raise InputError(
            f"{source.spec} holds the splits {splits}; pass --split NAME to ingest one of them (ingest each split "
            "into its own file: merging them would let an upstream test split leak into training)"
        )
    return splits[0]
