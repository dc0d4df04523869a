"""The multi-process path gives exactly the single-process output, line numbers included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sc_data.ingest import ingest, parallel


def test_chunk_bounds_cover_the_file_at_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    data = b"".join(b"%d" % i * (i % 7 + 1) + b"\n" for i in range(200)) + b"no newline at end"
    path.write_bytes(data)
    bounds = parallel.chunk_bounds(path, chunk_bytes=50)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(data[end - 1 : end] == b"\n" for _, end in bounds[:-1])


@pytest.mark.skipif(parallel.workers() < 2, reason="needs two CPUs")
def test_parallel_matches_sequential(bad_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sequential = ingest([bad_corpus], tmp_path / "seq.parquet")
    assert not parallel.worth_it(bad_corpus, "jsonl", None, parallel.IngestOptions())
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 300)  # several bad lines, each in its own chunk
    assert len(parallel.chunk_bounds(bad_corpus)) > 4
    parallel_run = ingest([bad_corpus], tmp_path / "par.parquet")
    assert pq.read_table(tmp_path / "par.parquet").equals(pq.read_table(tmp_path / "seq.parquet"))
    assert pq.read_table(tmp_path / "par.rejects.parquet").equals(pq.read_table(tmp_path / "seq.rejects.parquet"))
    assert parallel_run.by_reason == sequential.by_reason
    assert (parallel_run.rows_in, parallel_run.rows_out) == (sequential.rows_in, sequential.rows_out)
