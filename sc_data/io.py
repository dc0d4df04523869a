"""Atomic writes and hashing shared by every step that writes to disk.

A crash must never leave a half-written file under its final name: each writer writes to a
temporary sibling and renames it into place (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"

#: Environment variable naming sc-data's cache root (converted models, judge replies, pulled datasets).
CACHE_ENV = "SC_DATA_CACHE"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Final files get the mode a plain ``open(path, "w")`` would give (mkstemp's are 0600, which
#: would hide a staged dataset from colleagues on a shared machine). Read once, at import.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def temp_dir_beside(final: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A new hidden folder next to ``final``, to fill and then rename onto it.

    Same file system as the target, so the rename is atomic; mode as ``mkdir`` would give
    (mkdtemp's 0700 would survive the rename and hide the folder from other users).
    """
    target = Path(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    os.chmod(tmp, _DIR_MODE)
    return tmp


def _aside(final: Path) -> list[Path]:
    """What :func:`_swap_into_place` moved aside for ``final`` and did not delete: ``.NAME.old-<8 hex digits>``."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.old-[0-9a-f]{{8}}")
    return sorted(p for p in final.parent.glob(f".{glob.escape(final.name)}.old-*") if pattern.fullmatch(p.name))


def _remove(path: Path) -> None:
    """A folder, or the symlink a swap moved aside in its place (``rmtree`` refuses those)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def finish_swap(final: str | os.PathLike[str], *, restore: bool = True) -> None:
    """Finish what a killed :func:`atomic_dir` swap left beside ``final``.

    Killed after its two renames, the old folder is left aside undeleted: it goes. Killed between
    them, the old folder is aside and nothing is at ``final``: with ``restore`` it goes back. A
    step calls that before it checks its output, so a killed run leaves the old output, as a
    finished one would; :func:`atomic_dir` only clears what a finished swap left, so it never
    puts back a folder its caller did not check.
    """
    final = Path(final)
    aside = _aside(final)
    if final.exists() or final.is_symlink():
        for old in aside:
            _remove(old)
    elif restore and len(aside) == 1:
        os.replace(aside[0], final)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the filled folder ``tmp`` onto ``final``; an existing ``final`` is moved aside first and
    deleted only once the new one is in place (a folder can't be renamed onto a non-empty one)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new folder beside ``path`` to fill; it replaces ``path`` only if the block succeeds."""
    final = Path(path)
    finish_swap(final, restore=False)
    tmp = temp_dir_beside(final, suffix)
    try:
        yield tmp
        _swap_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(table: pa.Table, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``table`` atomically as zstd Parquet."""
    kwargs.setdefault("compression", PARQUET_COMPRESSION)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` atomically as indented, key-sorted UTF-8 JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` atomically as UTF-8."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, "utf-8")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path]) -> str:
    """Hex sha256 of several files, in order: over each one's name and sha256 (a folder input, the shards a report plots)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def cache_dir(*parts: str) -> Path:
    """A folder under sc-data's one cache root: ``$SC_DATA_CACHE``, else ``~/.cache/sc-data``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sc-data").expanduser()
    return root.joinpath(*parts)
