"""Report plots: real PNGs from a staged folder; Spearman against a direct float64 reference."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

from sc_data.errors import ConfigError, InputError
from sc_data.io import sha256_file
from sc_data.manifest import read_manifest
from sc_data.schema import load_json_schema
from sc_data.stage.folder import shard_files
from sc_data.stage.pipeline import stage
from sc_data.stage.report import PLOT_NAMES, REPORT_MANIFEST, report, spearman_matrix
from tests.stage.conftest import make_scored


def reference_spearman(x: list[float], y: list[float]) -> float:
    """Pearson correlation of average ranks, one row at a time."""

    def ranks(v: list[float]) -> list[float]:
        return [sum(1 for w in v if w < a) + (sum(1 for w in v if w == a) - 1) / 2 for a in v]

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (sx * sy)


def test_spearman_matches_reference() -> None:
    table = make_scored(40, seed=31)
    cols = ["ref_margin__margin_mean", "judge__severity"]
    got = spearman_matrix(table, cols)
    expected = reference_spearman(*(table.column(c).cast(pa.float64()).to_pylist() for c in cols))
    np.testing.assert_allclose(got, [[1.0, expected], [expected, 1.0]], rtol=0, atol=1e-12)


def test_report_writes_pngs(tmp_path: Path) -> None:
    staged = tmp_path / "ds"
    stage(make_scored(80, seed=32), staged, plots=False)
    paths = report(staged)
    assert [p.name for p in paths] == [f"{n}.png" for n in PLOT_NAMES]
    assert all(p.parent == tmp_path / "ds_report" for p in paths)
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_report_replaces_only_its_own_pngs(tmp_path: Path) -> None:
    staged, out = tmp_path / "ds", tmp_path / "figures"
    stage(make_scored(80, seed=32), staged, plots=False)
    out.mkdir()
    (out / "mine.txt").write_text("my notes")
    (out / "difficulty_histogram.png").write_bytes(b"my own figure")
    with pytest.raises(ConfigError, match=r"already exists; pass --overwrite"):
        report(staged, out)
    with pytest.raises(ConfigError, match=r"refusing to overwrite .*difficulty_histogram.png.*sc-data did not write it"):
        report(staged, out, overwrite=True)
    assert (out / "difficulty_histogram.png").read_bytes() == b"my own figure"
    (out / "difficulty_histogram.png").unlink()
    first = report(staged, out)
    manifest = read_manifest(out / REPORT_MANIFEST)
    assert manifest["kind"] == "report" and [f["path"] for f in manifest["files"]] == [p.name for p in first]
    assert manifest["files"][0]["sha256"] == sha256_file(first[0])
    jsonschema.validate(manifest, load_json_schema("manifest"))
    assert report(staged, out, overwrite=True) == first  # its own: replaced
    assert sorted(p.name for p in out.iterdir()) == sorted(["mine.txt", REPORT_MANIFEST, *(p.name for p in first)])


def test_a_shard_that_cannot_be_read_is_one_error(tmp_path: Path) -> None:
    staged = tmp_path / "ds"
    stage(make_scored(80, seed=32), staged, plots=False)
    shard = shard_files(staged)[0]
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(InputError, match=r"cannot read shard .*\.parquet"):
        report(staged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_needs_staged_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no data/\*/\*.parquet shards"):
        report(tmp_path)
