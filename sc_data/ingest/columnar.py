"""The columnar path: a stretch of TRL-standard string JSONL parsed, validated and id'd as Arrow arrays.

The row path (:mod:`sc_data.ingest.convert`) spends ~18 µs of Python per pair; a native JSON
reader and vectorised checks do the common case in a fraction of that. The columnar path takes a
stretch of lines only when every row is the plain case whose result it can compute exactly:
``{"prompt", "chosen", "rejected"}`` strings and nothing else, no blank line, ASCII text without
control characters (so NFC is the identity and ``str.strip`` is a trim of four characters), every text within ``max_chars``, non-empty after
stripping, and two different answers. Anything else (a parse error, a null, an extra column, a
row that fails a check) sends the whole stretch to the row path, which gives each bad row its
exact line, field and reason. Either way the pairs, ids and rejects are the same; a test compares
the two paths on every JSONL input of the test corpus.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sc_data.ingest.arrow import output_schema
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.convert import Converted
from sc_data.schema import MESSAGE_TYPE

#: Set False to force the row path (the equivalence test compares both).
ENABLED = True

_COLUMNS = ("prompt", "chosen", "rejected")
_PARSE = pj.ParseOptions(explicit_schema=pa.schema([(c, pa.string()) for c in _COLUMNS]), unexpected_field_behavior="error")
#: Control characters the fast path leaves to the row path (JSON escapes them as \\u00XX; NUL is a reject).
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
#: Raw bytes no plain line holds besides non-ASCII: control characters but the newline (inside a
#: string they are invalid JSON, which the row path rejects and a lenient parser might not).
_RAW_CONTROL = bytes(b for b in range(32) if b != 10)
#: What ``str.strip()`` removes from ASCII text once the other control characters are excluded.
_WHITESPACE = " \t\n\r"
_encode = json.encoder.encode_basestring  # type: ignore[attr-defined]  # the row path's C encoder


def _quoted(text: str) -> str:
    return '"' + text + '"'


def applies(fmt: str, options: IngestOptions) -> bool:
    """Whether an input of format ``fmt`` read with ``options`` may take the columnar path."""
    return ENABLED and fmt == "trl" and not options.column_map


def _parse(data: bytes) -> pa.Table | None:
    """The stretch as a (prompt, chosen, rejected) table, or None when it is not one plain record per line."""
    if not data or not data.isascii() or b"\n\n" in data or data.startswith(b"\n"):
        return None
    if len(data.translate(None, _RAW_CONTROL)) != len(data):
        return None
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    try:
        table = pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=len(data) + 1, use_threads=False),
                             parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == lines and table.num_columns == 3 else None


def _plain(table: pa.Table, max_chars: int, escaped: bool) -> list[list[str]] | None:
    """The stripped texts (prompt, chosen, rejected) when every row is the plain valid case, else None.

    ``escaped``: the stretch holds ``\\u`` escapes, which may decode to non-ASCII or control characters.
    """
    stripped = []
    for name in _COLUMNS:
        text = table.column(name).combine_chunks()
        if text.null_count or pc.max(pc.utf8_length(text)).as_py() > max_chars:
            return None
        if escaped and (not pc.all(pc.string_is_ascii(text)).as_py() or pc.any(pc.match_substring_regex(text, _CONTROL)).as_py()):
            return None
        trimmed = pc.utf8_trim(text, _WHITESPACE)
        if pc.min(pc.utf8_length(trimmed)).as_py() == 0:
            return None
        stripped.append(trimmed)
    if pc.any(pc.equal(stripped[1], stripped[2])).as_py():
        return None
    return [s.to_pylist() for s in stripped]


def _messages(role: str, content: pa.Array) -> pa.Array:
    n = len(content)
    roles = pa.repeat(pa.scalar(role, pa.string()), n)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.StructArray.from_arrays([roles, content], fields=list(MESSAGE_TYPE)))


def columnar_chunk(data: bytes, source_name: str, options: IngestOptions) -> Converted | None:
    """One stretch of whole lines as a converted batch (lines 1-based within it), or None for the row path."""
    table = _parse(data)
    if table is None:
        return None
    stripped = _plain(table, options.max_chars, escaped=b"\\u" in data)
    if stripped is None:
        return None
    sha = hashlib.sha256
    # Without a backslash in the stretch no text holds a quote, backslash or control character, so
    # its JSON string is the text in quotes; otherwise the row path's C encoder escapes it.
    enc = _encode if b"\\" in data else _quoted
    ids = [
        sha(('{"chosen":[{"content":' + enc(c) + ',"role":"assistant"}],"prompt":[{"content":' + enc(p)
             + ',"role":"user"}],"rejected":[{"content":' + enc(r) + ',"role":"assistant"}]}').encode()).hexdigest()[:16]
        for p, c, r in zip(*stripped, strict=True)
    ]
    n = table.num_rows
    flag = options.safety_pairs == "flag"
    arrays = [
        pa.array(ids, pa.string()),
        _messages("user", table.column("prompt").combine_chunks()),
        _messages("assistant", table.column("chosen").combine_chunks()),
        _messages("assistant", table.column("rejected").combine_chunks()),
        pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string())),
        pa.nulls(n, pa.string()),
        pa.repeat(pa.scalar(source_name, pa.string()), n),
        pa.nulls(n, pa.bool_()),
        pa.nulls(n, pa.bool_()),
    ]
    if flag:
        arrays.append(pa.nulls(n, pa.string()))
    batch = pa.RecordBatch.from_arrays(arrays, schema=output_schema(flag))
    return Converted(batch, [], list(range(1, n + 1)), ids, ids)
