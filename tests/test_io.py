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


def test_manifest_holds_numbers_as_numbers_and_refuses_what_json_cannot_hold(tmp_path) -> None:
    """A numpy count is written as a JSON number and a path as its text; anything else is an error, and nothing is written."""
    import json
    from pathlib import Path

    import numpy as np

    from sc_data.manifest import write_manifest

    path = write_manifest({"counts": {"rows_in": np.int64(7), "share": np.float32(0.5), "any": np.bool_(True)}, "out": Path("a/b")},
                          tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"counts": {"rows_in": 7, "share": 0.5, "any": True}, "out": "a/b"}
    for bad in (np.arange(3), object(), {1, 2}):
        with pytest.raises(TypeError, match="can't hold"):
            write_manifest({"counts": {"rows_in": bad}}, tmp_path / "bad.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


class TestFinishSwap:
    """A folder swap killed between its renames leaves the old folder aside: the next writer puts it back, or clears it."""

    def test_killed_between_the_renames_the_old_folder_goes_back(self, tmp_path) -> None:
        final = tmp_path / "out[1]"  # a name with glob characters
        aside = tmp_path / ".out[1].old-1a2b3c4d"
        aside.mkdir()
        (aside / "shard.parquet").write_text("old")
        io_mod.finish_swap(final)
        assert (final / "shard.parquet").read_text() == "old" and not aside.exists()

    def test_killed_after_them_the_old_folder_goes(self, tmp_path) -> None:
        final, aside = tmp_path / "out", tmp_path / ".out.old-1a2b3c4d"
        final.mkdir()
        aside.mkdir()
        (aside / "shard.parquet").write_text("old")
        with io_mod.atomic_dir(final) as tmp:
            (tmp / "shard.parquet").write_text("new")
        assert (final / "shard.parquet").read_text() == "new"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    def test_only_what_a_swap_names_is_touched(self, tmp_path) -> None:
        final = tmp_path / "ds"
        final.mkdir()
        for name in (".ds.old-backup", ".ds.old-v2.old-1a2b3c4d", ".ds.old-1A2B3C4D"):  # a user's, another output's, not ours
            (tmp_path / name).mkdir()
            (tmp_path / name / "important.txt").write_text("keep")
        with io_mod.atomic_dir(final) as tmp:
            (tmp / "x").write_text("new")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.old-1A2B3C4D", ".ds.old-backup", ".ds.old-v2.old-1a2b3c4d", "ds"]

    def test_atomic_dir_never_puts_back_what_its_caller_did_not_check(self, tmp_path) -> None:
        aside = tmp_path / ".probe.old-1a2b3c4d"
        aside.mkdir()
        (aside / "data.parquet").write_text("a staged dataset")
        with io_mod.atomic_dir(tmp_path / "probe") as tmp:
            (tmp / "probe.json").write_text("{}")
        assert (aside / "data.parquet").read_text() == "a staged dataset"

    def test_a_symlink_swapped_aside_is_removed_its_target_kept(self, tmp_path) -> None:
        target = tmp_path / "target"
        target.mkdir()
        (target / "shard.parquet").write_text("old")
        (tmp_path / "link").symlink_to(target)
        with io_mod.atomic_dir(tmp_path / "link") as tmp:
            (tmp / "shard.parquet").write_text("new")
        assert (target / "shard.parquet").read_text() == "old" and (tmp_path / "link" / "shard.parquet").read_text() == "new"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]

    def test_two_folders_aside_are_left_for_a_person(self, tmp_path) -> None:
        for name in (".out.old-1a2b3c4d", ".out.old-5e6f7a8b"):
            (tmp_path / name).mkdir()
        io_mod.finish_swap(tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".out.old-1a2b3c4d", ".out.old-5e6f7a8b"]
