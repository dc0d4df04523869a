"""The columnar path gives exactly the row path's pairs, ids, rejects and counts, on every JSONL input we have.

Each case is ingested twice, with the columnar path on and off; the pairs tables, the rejects
tables and the manifest counts must be equal. The plain inputs must actually take the columnar
path (counted), so the comparison is not the row path against itself.
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sc_data.ingest import columnar, ingest, ingest_tables, parallel
from sc_data.ingest.config import DEFAULT_MAX_CHARS

REPO = Path(__file__).parents[2]

PLAIN = [{"prompt": f"How do I do thing {i}?", "chosen": f"I can't help with {i}.", "rejected": f"Sure, step {i}: do it."} for i in range(40)]

#: One odd line each, put in the middle of plain lines: every way a line can leave the plain case.
ODD_LINES = {
    "escapes": json.dumps({"prompt": 'Say "hi"\\ now\n\tplease', "chosen": "No.\r\nSorry.", "rejected": "Hi\\n"}),
    "unicode_escape": '{"prompt": "caf\\u00e9?", "chosen": "Non.", "rejected": "Oui."}',
    # what JSON escapes, written as \u escapes: the id's canonical JSON must escape them anyway
    "quote_unicode_escape": '{"prompt": "Say \\u0022hi\\u0022 \\u005c now", "chosen": "No.", "rejected": "Yes."}',
    "tab_escape_only": json.dumps({"prompt": "Q?\tnow", "chosen": "No.", "rejected": "Yes."}),
    "solidus_escape": '{"prompt": "a\\/b?", "chosen": "No.", "rejected": "Yes."}',
    "non_ascii": json.dumps({"prompt": "café?", "chosen": "Non.", "rejected": "Oui."}, ensure_ascii=False),
    "non_ascii_space_inside": json.dumps({"prompt": "Q\u00a0?", "chosen": "No\u3000way.", "rejected": "Yes."}, ensure_ascii=False),
    "non_ascii_space_at_end": json.dumps({"prompt": "Q?", "chosen": "No.\u00a0", "rejected": "Yes."}, ensure_ascii=False),
    "non_ascii_space_under_ascii": json.dumps({"prompt": "Q?", "chosen": "No.", "rejected": " \u2003Yes. "}, ensure_ascii=False),
    "astral": json.dumps({"prompt": "Q? \U0001F600", "chosen": "No.", "rejected": "Yes \U0001F600"}, ensure_ascii=False),
    "astral_escaped": json.dumps({"prompt": "Q? \U0001F600", "chosen": "No.", "rejected": "Yes."}),
    # in characters, not bytes: two bytes each in UTF-8
    "long_non_ascii": json.dumps({"prompt": "\u00e9" * (DEFAULT_MAX_CHARS - 1), "chosen": "No.", "rejected": "Yes."}, ensure_ascii=False),
    "too_long_non_ascii": json.dumps({"prompt": "\u00e9" * (DEFAULT_MAX_CHARS + 1), "chosen": "No.", "rejected": "Yes."}, ensure_ascii=False),
    "combining": json.dumps({"prompt": "cafe\u0301?", "chosen": "Non.", "rejected": "Oui."}, ensure_ascii=False),
    # what NFC may change, raw in 3 and 4 bytes of UTF-8 and as an escape: each left to the row path
    "ohm_sign": json.dumps({"prompt": "5 \u2126?", "chosen": "No.", "rejected": "Yes."}, ensure_ascii=False),
    "astral_combining": json.dumps({"prompt": "Q\U0001D165?", "chosen": "No.", "rejected": "Yes."}, ensure_ascii=False),
    "combining_escaped": '{"prompt": "cafe\\u0301?", "chosen": "Non.", "rejected": "Oui."}',
    "raw_tab": '{"prompt": "a\tb?", "chosen": "No.", "rejected": "Yes."}',
    "nul_escape": '{"prompt": "a\\u0000b?", "chosen": "No.", "rejected": "Yes."}',
    "control_escape": '{"prompt": "a\\u0001b?", "chosen": "No.", "rejected": "Yes."}',
    "lone_surrogate": '{"prompt": "a\\ud800b?", "chosen": "No.", "rejected": "Yes."}',
    "blank_line": "",
    "whitespace_line": "   ",
    "crlf": json.dumps({"prompt": "Q?", "chosen": "No.", "rejected": "Yes."}) + "\r",
    "extra_field": json.dumps({"prompt": "Q?", "chosen": "No.", "rejected": "Yes.", "id": "x1"}),
    "category": json.dumps({"prompt": "Q?", "chosen": "No.", "rejected": "Yes.", "category": "privacy"}),
    "null": json.dumps({"prompt": None, "chosen": "No.", "rejected": "Yes."}),
    "missing": json.dumps({"chosen": "No.", "rejected": "Yes."}),
    "number": json.dumps({"prompt": 3, "chosen": "No.", "rejected": "Yes."}),
    "messages": json.dumps({"prompt": [{"role": "user", "content": "Q?"}], "chosen": "No.", "rejected": "Yes."}),
    "padded": json.dumps({"prompt": "  Q?  ", "chosen": " No. ", "rejected": "Yes.  "}),
    "padded_escapes": json.dumps({"prompt": "\nQ?\t", "chosen": "No.\r\n", "rejected": " Yes."}),
    "identical": json.dumps({"prompt": "Q?", "chosen": " Same. ", "rejected": "Same."}),
    "empty_answer": json.dumps({"prompt": "Q?", "chosen": " \n ", "rejected": "Yes."}),
    "empty_prompt": json.dumps({"prompt": "\t", "chosen": "No.", "rejected": "Yes."}),
    "vertical_tab": json.dumps({"prompt": "Q?\u000b", "chosen": "No.", "rejected": "Yes."}),
    "file_separator": json.dumps({"prompt": "Q?\u001c", "chosen": "No.", "rejected": "Yes."}),
    "form_feed_escape": json.dumps({"prompt": "Q?\f", "chosen": "No.", "rejected": "Yes."}),
    "backspace_escape": json.dumps({"prompt": "Q?", "chosen": "No.\b", "rejected": "Yes."}),
    "too_long": json.dumps({"prompt": "Q" * 200_001, "chosen": "No.", "rejected": "Yes."}),
    "bad_json": '{"prompt": "Q?", "chosen": "No.", "rejected": "Yes."',
    "trailing_comma": '{"prompt": "Q?", "chosen": "No.", "rejected": "Yes.",}',
    "not_object": '["Q?", "No.", "Yes."]',
    "extra_data": '{"prompt": "Q?", "chosen": "No.", "rejected": "Yes."} {}',
    "duplicate_key": '{"prompt": "Q?", "prompt": "Q2?", "chosen": "No.", "rejected": "Yes."}',
    "hh_transcript": json.dumps({"chosen": "\n\nHuman: Q?\n\nAssistant: No.", "rejected": "\n\nHuman: Q?\n\nAssistant: Yes."}),
    "duplicate_row": json.dumps(PLAIN[0]),
}


def _both(tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch, **options) -> dict[bool, tuple]:
    out = {}
    for enabled in (True, False):
        monkeypatch.setattr(columnar, "ENABLED", enabled)
        target = tmp_path / f"pairs_{enabled}.parquet"
        try:
            result = ingest(inputs, target, **options)
        except Exception as e:  # noqa: BLE001 - both paths must fail alike
            out[enabled] = (type(e).__name__, str(e))
            continue
        rejects = pq.read_table(result.rejects)
        out[enabled] = (pq.read_table(target), rejects, result.rows_in, result.rows_out, result.rows_rejected, result.by_reason)
    return out


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _recorded(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    """What ``columnar.<name>`` returns, call by call, while the test runs."""
    returned: list = []
    real = getattr(columnar, name)

    def record(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(columnar, name, record)
    return returned


def test_plain_input_takes_the_columnar_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks, scans = _recorded(monkeypatch, "columnar_chunk"), _recorded(monkeypatch, "plain_records")
    src = _write(tmp_path / "plain.jsonl", [json.dumps(r) for r in PLAIN])
    both = _both(tmp_path, [src], monkeypatch)
    assert chunks and all(c is not None and not len(c[1]) for c in chunks)
    assert scans and all(s is not None for s in scans)  # read by the byte scan, not pyarrow's reader
    assert both[True][0].equals(both[False][0]) and both[True][1:] == both[False][1:]
    assert both[True][3] == len(PLAIN)
    counts = json.loads((tmp_path / "pairs_True.manifest.json").read_text())["counts"]
    assert counts["rows_in"] == len(PLAIN) and type(counts["rows_in"]) is int  # numpy's count is no JSON number


#: Odd lines after which the stretch isn't one plain record a line: the row path reads all of it.
WHOLE_STRETCH = {
    "bad_json", "blank_line", "category", "crlf", "duplicate_key", "extra_data", "extra_field", "lone_surrogate",
    "messages", "not_object", "number", "raw_tab", "trailing_comma", "whitespace_line",
}
#: Odd lines the columnar path still computes itself (what it computes is then checked, not skipped).
COLUMNAR = {
    "astral", "astral_escaped", "duplicate_row", "escapes", "long_non_ascii", "non_ascii", "non_ascii_space_inside",
    "padded", "padded_escapes", "quote_unicode_escape", "solidus_escape", "tab_escape_only", "unicode_escape",
}
ODD_AT = 20  # where the odd line goes, 0-based


@pytest.mark.parametrize("case", sorted(ODD_LINES))
def test_odd_line_gives_the_same_result(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same result both ways; and the columnar path takes the stretch, leaving the row path just the odd line (if any), unless the stretch isn't plain records."""
    lines = [json.dumps(r) for r in PLAIN[:ODD_AT]] + [ODD_LINES[case]] + [json.dumps(r) for r in PLAIN[ODD_AT:]]
    src = _write(tmp_path / f"{case}.jsonl", lines)
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch, dedup=case == "duplicate_row")
    left_to_rows = [None if c is None else c[1].tolist() for c in chunks]
    assert left_to_rows == [None if case in WHOLE_STRETCH else [] if case in COLUMNAR else [ODD_AT]]
    if isinstance(both[False][0], str):
        assert both[True] == both[False]
        return
    assert both[True][0].equals(both[False][0]), case
    assert both[True][1].equals(both[False][1]), (case, both[True][1].to_pylist(), both[False][1].to_pylist())
    assert both[True][2:] == both[False][2:]


@pytest.mark.parametrize("path", [
    REPO / "examples" / "pairs.jsonl", REPO / "tests" / "data" / "bad" / "trl_bad.jsonl", REPO / "tests" / "data" / "bad" / "row_faults.jsonl",
])
def test_repository_inputs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both = _both(tmp_path, [path], monkeypatch)
    if isinstance(both[False][0], str):
        assert both[True] == both[False]
        return
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]) and both[True][2:] == both[False][2:]


def test_shared_inputs(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in (shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl", shared_data / "pku-saferlhf" / "alpaca7b_test_head.jsonl"):
        (tmp_path / path.stem).mkdir()
        both = _both(tmp_path / path.stem, [path], monkeypatch)
        assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]), path
        assert both[True][2:] == both[False][2:]


def test_real_text_takes_the_columnar_path(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real text through the columnar path: the paper's pairs as plain TRL rows (its ``Human: `` prefix taken off), raw UTF-8.

    Non-ASCII in 80 % of the rows (typographic quotes), escapes in 13 %: the ids, pairs and counts
    must be the row path's.
    """
    records = [json.loads(line) for line in (shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl").read_text("utf-8").splitlines()]
    src = _write(tmp_path / "paper_trl.jsonl", [
        json.dumps({"prompt": r["prompt"].removeprefix("Human: "), "chosen": r["chosen"], "rejected": r["rejected"]}, ensure_ascii=False)
        for r in records
    ])
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch)
    assert chunks and all(c is not None and not len(c[1]) for c in chunks)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1])
    assert both[True][2:] == both[False][2:] and both[True][3] == len(records)


def test_invalid_utf8_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line that isn't UTF-8 sends its stretch to the row path, which rejects just that line."""
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in PLAIN]
    lines[5] = b'{"prompt": "caf\xe9?", "chosen": "Non.", "rejected": "Oui."}'
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch)
    assert chunks == [None]
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1])
    assert both[True][1].column("reason").to_pylist() == ["invalid_utf8"]


def test_odd_lines_scattered_over_stretches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row-level odd line, again and again among plain ones, over many stretches, repeats dropped by ``dedup``:
    each stretch stays columnar, leaves its odd lines to the row path, and the merged result is the row path's, line numbers included."""
    row_level = sorted(set(ODD_LINES) - WHOLE_STRETCH - COLUMNAR - {"too_long", "too_long_non_ascii", "long_non_ascii"})
    plain = [json.dumps({"prompt": f"Question {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}."}) for i in range(400)]
    lines = []
    for i, line in enumerate(plain):
        lines.append(line)
        if i % 5 == 0:
            lines.append(ODD_LINES[row_level[i // 5 % len(row_level)]])
        if i % 37 == 0:
            lines.append(plain[i // 2])  # a repeat, for the ledger
    src = _write(tmp_path / "scattered.jsonl", lines)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 2_000)
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch, dedup=True)
    assert len(chunks) > 10 and all(c is not None and len(c[1]) for c in chunks)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1])
    assert both[True][2:] == both[False][2:] and both[True][5]["duplicate"] > 5 and len(both[True][5]) >= 5


def test_what_the_regex_vouches_for_is_its_own_nfc_and_strip() -> None:
    """A text the columnar path takes as it is (no match of its regex) must be its own NFC, and
    ``str.strip`` must remove no more than ASCII whitespace: checked on random texts mixing
    composable, combining, Hangul, compatibility and space characters with random BMP ones."""
    rng = random.Random(0)
    pool = list("aeoAE u\u00e9\u0301\u0308\u0327\u0591\u0592\u1100\u1161\u11a8\uac00\u00a0\u3000\u2003\u2019\uf900\u212b\u0344\u0bbe\u0bc6 \t\n")
    texts = ["".join(rng.choice(pool) if rng.random() < 0.8 else chr(rng.randrange(0x80, 0xD800)) for _ in range(rng.randint(1, 8)))
             for _ in range(20_000)]
    stripped = [t.strip(" \t\n\r") for t in texts]
    vouched = pc.invert(pc.match_substring_regex(pa.array(stripped), columnar._unvouched())).to_pylist()
    assert 1_000 < sum(vouched) < len(texts) - 1_000  # both outcomes exercised
    for text, ascii_stripped, ok in zip(texts, stripped, vouched, strict=True):
        if ok:
            assert unicodedata.normalize("NFC", text) == text and text.strip() == ascii_stripped, ascii(text)


#: Text pieces for random rows: plain, escaped, control, non-ASCII, composable, combining, spaces, astral.
PIECES = ["ab", " ", "Z.", "?", '"', "\\", "/", "\t", "\n", "\r", "\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x7f", "é", "e\u0301",
          "\u0301", "\u00a0", "\u3000", "\u2028", "\u1100\u1161", "\uac00", "\U0001f600", "\ufeff", "\u0591\u0592", "\uf900", "Å"]


def test_random_rows_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random TRL rows from the pieces above, written raw or ``\\u``-escaped: the columnar path (row by row, with
    the row path for what it leaves) gives exactly the row path's pairs and rejects, file after file."""
    rng = random.Random(0)
    taken = left = 0
    for trial in range(120):
        def text() -> str:
            return "".join(rng.choice(PIECES) if rng.random() < 0.25 else "ab" for _ in range(rng.randint(0, 6)))

        rows = [{"prompt": f"{text()}q{i}", "chosen": f"{text()}c", "rejected": text() + rng.choice(["c", "r", ""])} for i in range(rng.randint(1, 30))]
        src = tmp_path / f"{trial}.jsonl"
        src.write_bytes(("\n".join(json.dumps(r, ensure_ascii=rng.random() < 0.3) for r in rows) + "\n").encode())
        chunks = _recorded(monkeypatch, "columnar_chunk")
        out = {}
        for enabled in (True, False):
            monkeypatch.setattr(columnar, "ENABLED", enabled)
            out[enabled] = ingest_tables([src], format="trl")
        assert out[True][0].equals(out[False][0]) and out[True][1].equals(out[False][1]), src.read_bytes()
        taken += sum(c is not None for c in chunks)
        left += sum(len(c[1]) for c in chunks if c is not None)
        monkeypatch.undo()
    assert taken > 60 and left > 100  # the columnar path engaged, and left rows to the row path


def _row_path_lines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lines handed to ``parallel._row_path``, call by call, while the test runs."""
    handed: list[int] = []
    real = parallel._row_path

    def record(data: bytes, *args, **kwargs):
        handed.append(data.count(b"\n") + (not data.endswith(b"\n")))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(parallel, "_row_path", record)
    return handed


@pytest.mark.parametrize("at", [0, 333, 600])
@pytest.mark.parametrize("case", sorted(WHOLE_STRETCH))
def test_a_refused_stretch_is_halved_around_its_odd_line(case: str, at: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line that makes the columnar path refuse a stretch (a parse error, an extra key, ...), first, inside or last,
    leaves the row path a piece of fewer than ``2 * MIN_PIECE_LINES`` lines around it, not the stretch; the result is the row path's."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    plain = [json.dumps({"prompt": f"Question {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}."}) for i in range(600)]
    src = _write(tmp_path / f"{case}.jsonl", [*plain[:at], ODD_LINES[case], *plain[at:]])
    handed = _row_path_lines(monkeypatch)
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]) and both[True][2:] == both[False][2:]
    assert len(handed) == 1 and handed[0] < 16  # (with the columnar path off, the row path doesn't read by ranges)


def test_odd_lines_in_both_halves_are_still_confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Odd lines in both halves, then in both quarters of one: each is still confined to a small piece (and a row-level
    odd line inside a piece the columnar path takes goes to the row path alone, renumbered through both levels)."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    lines = [json.dumps({"prompt": f"Question {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}."}) for i in range(1000)]
    for at, case in ((100, "bad_json"), (300, "identical"), (700, "category"), (760, "number")):
        lines.insert(at, ODD_LINES[case])
    src = _write(tmp_path / "three_odd.jsonl", lines)
    handed = _row_path_lines(monkeypatch)
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]) and both[True][2:] == both[False][2:]
    assert both[True][1].column("line").to_pylist() == [101, 301, 761]  # the category line is a valid pair
    assert sum(handed) < 3 * 16 + 1  # the identical answers: a row the columnar path leaves alone to the row path


def test_a_stretch_of_odd_lines_is_not_halved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line with an extra column: its first, middle and last line are refused alone, so the row path reads the
    stretch whole after the one refused attempt, without halving it."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    lines = [json.dumps({"prompt": f"Q {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}.", "category": "privacy"}) for i in range(1000)]
    src = _write(tmp_path / "all_odd.jsonl", lines)
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][2:] == both[False][2:] and both[True][3] == 1000
    assert chunks == [None]


def test_a_stretch_with_no_plain_row_is_not_halved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row one the columnar path can't compute (decomposed accents: not NFC) but every line a plain record:
    the columnar path takes the stretch and leaves each row to the row path, once, instead of refusing it (which
    would halve it down to its smallest pieces, each refused again)."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    lines = [json.dumps({"prompt": f"Cafe\u0301 {i}?", "chosen": "Non.", "rejected": f"Oui {i}."}, ensure_ascii=False) for i in range(600)]
    src = _write(tmp_path / "nfd.jsonl", lines)
    chunks = _recorded(monkeypatch, "columnar_chunk")
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][2:] == both[False][2:] and both[True][3] == 600
    assert len(chunks) == 1 and chunks[0][0].pairs.num_rows == 0 and chunks[0][1].tolist() == list(range(600))


@pytest.mark.parametrize("where", ["halving_cut", "range_start"])
def test_a_bom_inside_the_file_is_the_line_s_not_the_file_s(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BOM starts only the file: a line after it that starts with one (two files concatenated) is invalid JSON,
    also when it begins a piece the row path reads alone (a halving cut, a range's start), as in one pass."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    lines = [json.dumps({"prompt": f"Question {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}."}) for i in range(1024)]
    lines[0] = "\ufeff" + lines[0]  # the file's own BOM: dropped
    lines[100] = ODD_LINES["bad_json"]  # the stretch is refused and halved: the second half starts at line 513
    lines[512] = "\ufeff" + lines[512]
    src = _write(tmp_path / "bom.jsonl", lines)
    if where == "range_start":
        bounds = parallel.chunk_bounds(src, len("\n".join(lines[:512]).encode()))
        assert bounds[1][0] == len("\n".join(lines[:512]).encode()) + 1  # line 513 starts the second range
        monkeypatch.setattr(parallel, "CHUNK_BYTES", len("\n".join(lines[:512]).encode()))
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]) and both[True][2:] == both[False][2:]
    assert both[True][1].column("line").to_pylist() == [101, 513] and both[True][3] == 1022


def test_no_empty_row_group_when_a_stretch_keeps_no_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row rejected (identical answers) but every line a plain record: nothing kept, and no 0-row row group
    written (``datasets`` breaks on one), as with the row path."""
    lines = [json.dumps({"prompt": f"Q {i}?", "chosen": "Same.", "rejected": "Same."}) for i in range(300)]
    lines.append(json.dumps({"prompt": "Q?", "chosen": "No.", "rejected": "Yes."}))
    src = _write(tmp_path / "identical.jsonl", lines)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", len("\n".join(lines[:300]).encode()))  # the first range keeps no pair
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][2:] == both[False][2:] and both[True][3] == 1
    meta = pq.ParquetFile(tmp_path / "pairs_True.parquet").metadata
    assert all(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


@pytest.mark.parametrize("budget", [4, 0.3, 0])
@pytest.mark.parametrize("final_newline", [True, False])
def test_halving_over_ranges_with_any_budget(budget: float, final_newline: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Odd lines in several ranges, halving cut short by the budget (or not at all), the last line without a newline
    or with one: always the row path's pairs, rejects and counts."""
    monkeypatch.setattr(parallel, "MIN_PIECE_LINES", 8)
    monkeypatch.setattr(parallel, "HALVING_BUDGET", budget)
    rng = random.Random(7)
    lines = [json.dumps({"prompt": f"Question {i}?", "chosen": f"No, {i}.", "rejected": f"Yes, {i}."}) for i in range(2000)]
    for at in sorted(rng.sample(range(2000), 9), reverse=True):
        lines.insert(at, ODD_LINES[rng.choice(sorted(WHOLE_STRETCH | {"identical", "padded_escapes"}))])
    lines[-1] = ODD_LINES["bad_json"]
    src = tmp_path / "many.jsonl"
    src.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")
    monkeypatch.setattr(parallel, "CHUNK_BYTES", src.stat().st_size // 3)
    assert len(parallel.chunk_bounds(src)) >= 3
    both = _both(tmp_path, [src], monkeypatch)
    assert both[True][0].equals(both[False][0]) and both[True][1].equals(both[False][1]) and both[True][2:] == both[False][2:]
    assert both[True][2] == 2009 - sum(line.strip() == "" for line in lines)
