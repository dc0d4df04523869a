"""experiments/reproduce/carry.py: models cut into bundles under the device's carry limit and joined back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def carry():
    from experiments.reproduce import carry

    return carry


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    gguf = tmp_path / "src" / "smol.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(rng.bytes(10_000))
    folder = tmp_path / "src" / "minilm"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(rng.bytes(7_000))
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "empty.txt").write_bytes(b"")
    csv = tmp_path / "src" / "xstest.csv"
    csv.write_text("id,prompt\n1,hi\n")
    return {"smollm2-135m-instruct": gguf, "all-minilm-l6-v2": folder, "xstest": csv}


def test_split_respects_limit_and_assembles_byte_identical(carry, sources, tmp_path, capsys):
    bundles = carry.split(sources, tmp_path / ".carry", bundle_mib=4096 / carry.MIB)  # 4 KiB bundles
    assert len(bundles) == 5  # 17,022 bytes in 4 KiB bundles
    for b in bundles:
        assert sum(p.stat().st_size for p in b.rglob("*") if p.is_file() and p.name != carry.MANIFEST) <= 4096
    parts = tmp_path / "machine" / "carry"
    parts.mkdir(parents=True)
    for b in bundles:  # what the device calls do, one bundle each
        for p in b.rglob("*"):
            if p.is_file():
                (parts / p.relative_to(b)).parent.mkdir(parents=True, exist_ok=True)
                (parts / p.relative_to(b)).write_bytes(p.read_bytes())
    paths = carry.assemble(parts, tmp_path / "models")
    assert paths["smollm2-135m-instruct"].read_bytes() == sources["smollm2-135m-instruct"].read_bytes()
    for f in ("model.safetensors", "config.json", "sub/empty.txt"):
        assert (paths["all-minilm-l6-v2"] / f).read_bytes() == (sources["all-minilm-l6-v2"] / f).read_bytes()
    assert paths["xstest"] == tmp_path / "models" / "xstest" / "xstest.csv" and paths["xstest"].read_text() == "id,prompt\n1,hi\n"
    assert carry.main(["assemble", str(parts), str(tmp_path / "models2")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == ["--set", f"score.model={tmp_path / 'models2' / 'smollm2-135m-instruct' / 'smol.gguf'}",
                       "--set", f"score.encoder={tmp_path / 'models2' / 'all-minilm-l6-v2'}", "--xstest", str(tmp_path / "models2" / "xstest" / "xstest.csv")]


def test_missing_bundle_and_corrupt_piece_are_refused(carry, sources, tmp_path):
    bundles = carry.split(sources, tmp_path / ".carry", bundle_mib=4096 / carry.MIB)
    parts = tmp_path / "parts"
    for b in bundles[:-1]:
        for p in b.rglob("*"):
            if p.is_file():
                (parts / p.relative_to(b)).parent.mkdir(parents=True, exist_ok=True)
                (parts / p.relative_to(b)).write_bytes(p.read_bytes())
    with pytest.raises(SystemExit, match=r"pieces of bundle\(s\) \[5\] are missing"):
        carry.assemble(parts, tmp_path / "models")
    for p in bundles[-1].rglob("*"):
        if p.is_file():
            (parts / p.relative_to(bundles[-1])).parent.mkdir(parents=True, exist_ok=True)
            (parts / p.relative_to(bundles[-1])).write_bytes(p.read_bytes())
    piece = next(parts.rglob("smol.gguf.part000"))
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    with pytest.raises(SystemExit, match="smol.gguf: the joined file does not match"):
        carry.assemble(parts, tmp_path / "models")
    assert not (tmp_path / "models" / "smollm2-135m-instruct" / "smol.gguf").exists()


def test_real_sources_fit_in_four_calls(carry, shared_data):
    sizes = {name: (p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
             for name, p in carry.sources(shared_data).items()}
    assert set(sizes) == set(carry.FLAGS)
    assert sum(sizes.values()) <= 4 * 60 * carry.MIB  # the module docstring promises .carry/1 .. .carry/4
