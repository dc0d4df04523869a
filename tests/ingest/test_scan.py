"""The byte scan reads a plain TRL stretch exactly as ``json.loads`` does each line, and refuses every other stretch.

Refusing is always safe (the caller parses the stretch the general way); reading a stretch
differently from ``json.loads`` is not. So besides the hand-written cases, a fuzz test mutates
valid stretches byte by byte and checks that whatever the scan still reads, ``json.loads`` reads
the same.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from sc_data.ingest.scan import plain_records

KEYS = ("prompt", "chosen", "rejected")


def _record(rng: random.Random, i: int) -> dict[str, str]:
    alphabet = "abc XYZ{}[]:,'0123456789?!"
    return {k: "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) + str(i) for k in KEYS}


def _line(record: dict[str, str], rng: random.Random) -> str:
    keys = list(KEYS)
    rng.shuffle(keys)
    separators = rng.choice([(", ", ": "), (",", ":"), (" ,  ", " : ")])
    return rng.choice(["", " ", "  "]) + json.dumps({k: record[k] for k in keys}, separators=separators) + rng.choice(["", " "])


def _stretch(lines: list[str], final_newline: bool = True) -> bytes:
    return ("\n".join(lines) + ("\n" if final_newline else "")).encode()


def _as_loaded(data: bytes) -> pa.Table | None:
    """The reference: each line through ``json.loads``; None unless every line is an object of exactly the three string keys."""
    columns: dict[str, list[str]] = {k: [] for k in KEYS}
    for line in data.decode().split("\n")[: data.count(b"\n") + (0 if data.endswith(b"\n") else 1)]:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or sorted(record) != sorted(KEYS) or not all(isinstance(v, str) for v in record.values()):
            return None
        for k in KEYS:
            columns[k].append(record[k])
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})


def _lines_in(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


@pytest.mark.parametrize("final_newline", [True, False])
def test_reads_what_json_loads_reads(final_newline: bool) -> None:
    rng = random.Random(0)
    data = _stretch([_line(_record(rng, i), rng) for i in range(500)], final_newline)
    table = plain_records(data, _lines_in(data))
    assert table is not None
    assert table.equals(_as_loaded(data))


BAD_LINES = {
    "extra key": '{"prompt": "p", "chosen": "c", "rejected": "r", "id": "x"}',
    "missing key": '{"prompt": "p", "chosen": "c"}',
    "duplicate key": '{"prompt": "p", "prompt": "q", "chosen": "c"}',
    "same-length misspelt key": '{"prompt": "p", "chosem": "c", "rejected": "r"}',
    "longer key, same start": '{"prompts": "p", "chosen": "c", "rejected": "r"}',
    "empty key": '{"": "p", "chosen": "c", "rejected": "r"}',
    "number value": '{"prompt": 1, "chosen": "c", "rejected": "r", "x": "y"}',
    "null value": '{"prompt": null, "chosen": "c", "rejected": "r", "x": "y"}',
    "list value": '{"prompt": ["p"], "chosen": "c", "rejected": "r"}',
    "two objects": '{"prompt": "p", "chosen": "c", "rejected": "r"} {}',
    "trailing comma": '{"prompt": "p", "chosen": "c", "rejected": "r",}',
    "no colon": '{"prompt" "p", "chosen": "c", "rejected": "r"}',
    "array": '["prompt", "p", "chosen", "c", "rejected", "r"]',
    "unclosed": '{"prompt": "p", "chosen": "c", "rejected": "r"',
    "key swapped with value": '{"p": "prompt", "c": "chosen", "r": "rejected"}',
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_refuses_a_stretch_with_any_other_line(case: str) -> None:
    rng = random.Random(1)
    lines = [_line(_record(rng, i), rng) for i in range(20)]
    lines.insert(7, BAD_LINES[case])
    data = _stretch(lines)
    assert plain_records(data, _lines_in(data)) is None


def test_mutated_stretches_are_refused_or_read_exactly() -> None:
    rng = random.Random(2)
    read = refused = 0
    for trial in range(3000):
        data = bytearray(_stretch([_line(_record(rng, i), rng) for i in range(3)]))
        for _ in range(rng.randint(1, 2)):
            data[rng.randrange(len(data))] = ord(rng.choice('"{}:, abc[]0'))
        data = bytes(data)
        if b"\n\n" in data or data.startswith(b"\n"):
            continue
        table = plain_records(data, _lines_in(data))
        if table is None:
            refused += 1
        else:
            read += 1
            assert table.equals(_as_loaded(data)), (trial, data)
    assert read > 100 and refused > 100  # both outcomes exercised


@pytest.mark.parametrize("last", ['{"prompt":"p","chosen":"c","r":""}', '{"":"","prompt":"p","chosen":"c"}'])
def test_a_short_key_at_the_very_end_is_refused(last: str) -> None:
    """A key's bytes are read as one 8-byte word: one that ends too close to the stretch's end must be refused, not read past it."""
    rng = random.Random(3)
    data = _stretch([_line(_record(rng, i), rng) for i in range(5)] + [last], final_newline=False)
    assert plain_records(data, _lines_in(data)) is None
