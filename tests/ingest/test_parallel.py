"""The multi-process path gives exactly the single-process output, line numbers included."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sc_data.ingest import columnar, ingest, parallel


def test_chunk_bounds_cover_the_file_at_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    data = b"".join(b"%d" % i * (i % 7 + 1) + b"\n" for i in range(200)) + b"no newline at end"
    path.write_bytes(data)
    bounds = parallel.chunk_bounds(path, chunk_bytes=50)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(data[end - 1 : end] == b"\n" for _, end in bounds[:-1])


@pytest.mark.skipif(parallel.workers() < 2, reason="needs two CPUs")
@pytest.mark.parametrize(("which", "in_flight"), [("trl_bad", 1), ("trl_bad", 2), ("hh", 1)],
                         ids=["trl-on-a-thread", "trl-two-ranges-on-threads", "hh-in-fork-workers"])
def test_ranges_match_one_pass(which: str, in_flight: int, bad_corpus: Path, shared_data: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges give the one-pass row reader's pairs, rejects and counts: the TRL format's on threads,
    one or two at a time (columnar, or the row path for a range with a bad line), HH transcripts' in
    fork workers (forced here whatever the load)."""
    source = bad_corpus if which == "trl_bad" else _hh_with_bad_lines(shared_data, tmp_path)
    assert len(parallel.chunk_bounds(source, 300)) > 4
    with monkeypatch.context() as m:
        m.setattr(columnar, "ENABLED", False)
        m.setattr(parallel, "worth_it", lambda *args: False)
        one_pass = ingest([source], tmp_path / "one.parquet")
    forked: list[bool] = []  # worth_it consulted: only for a format the columnar path can't read
    spreads: list[bool] = []  # the processes argument of each range_batches call
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 300)  # several bad lines, each in its own range
    monkeypatch.setattr(parallel, "worth_it", lambda *args: forked.append(True) or True)
    monkeypatch.setattr(parallel, "LOOKAHEAD", in_flight)
    monkeypatch.setattr(parallel, "range_batches", functools.partial(_spy, parallel.range_batches, spreads))
    ranged = ingest([source], tmp_path / "ranged.parquet")
    assert spreads == [which == "hh"] and bool(forked) == (which == "hh")
    assert pq.read_table(tmp_path / "ranged.parquet").equals(pq.read_table(tmp_path / "one.parquet"))
    assert pq.read_table(tmp_path / "ranged.rejects.parquet").equals(pq.read_table(tmp_path / "one.rejects.parquet"))
    assert ranged.by_reason == one_pass.by_reason and sum(ranged.by_reason.values()) > 0
    assert (ranged.rows_in, ranged.rows_out) == (one_pass.rows_in, one_pass.rows_out)


def _spy(range_batches: Any, spreads: list[bool], *args: Any, processes: bool, **kwargs: Any) -> Any:
    """``range_batches``, recording whether it was asked for worker processes."""
    spreads.append(processes)
    return range_batches(*args, processes=processes, **kwargs)


def test_a_small_file_is_not_worth_workers(bad_corpus: Path) -> None:
    assert not parallel.worth_it(bad_corpus, "jsonl", None, parallel.IngestOptions())


def _hh_with_bad_lines(shared_data: Path, tmp_path: Path) -> Path:
    """The first 40 records of the HH-RLHF test file with a bad JSON line, a wrong type and a blank line among them."""
    lines = gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8").read().splitlines()[:40]
    lines[5] = lines[5][:-3]
    lines[12] = json.dumps({"chosen": 7, "rejected": "x"})
    lines[20] = ""
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path
