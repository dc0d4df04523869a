"""Fixtures of the ingest tests: the bad-input corpus and small writers for raw files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

BAD_DIR = Path(__file__).resolve().parents[1] / "data" / "bad"


@pytest.fixture()
def bad_corpus(tmp_path: Path) -> Path:
    """A copy of tests/data/bad/trl_bad.jsonl with a 5 MB line (line 17) appended."""
    path = tmp_path / "trl_bad.jsonl"
    huge = {"prompt": "Summarise this.", "chosen": "x" * (5 * 2**20), "rejected": "No."}
    path.write_bytes((BAD_DIR / "trl_bad.jsonl").read_bytes() + json.dumps(huge).encode() + b"\n")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSONL and return ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path
