"""Atomic writes: all or nothing, and the file mode a plain write would give."""

from __future__ import annotations

import hashlib
import importlib
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sc_data.io as io_mod


def test_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), io_mod.atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_final_file_has_the_umask_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        importlib.reload(io_mod)  # the mode is read from the umask at import
        io_mod.write_json({"a": 1}, tmp_path / "m.json")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
        importlib.reload(io_mod)
    modes = {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("m.json", "plain")}
    assert modes == {0o644}


def test_parquet_round_trip_and_hash(tmp_path) -> None:
    table = pa.table({"x": [1, 2, 3]})
    io_mod.write_parquet(table, tmp_path / "t.parquet")
    io_mod.write_json({"b": [1]}, tmp_path / "t.json")
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    expected = hashlib.sha256((tmp_path / "t.json").read_bytes()).hexdigest()
    assert io_mod.sha256_file(tmp_path / "t.json") == expected
