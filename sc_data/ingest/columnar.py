"""The columnar path: a stretch of TRL-standard string JSONL parsed, validated and id'd as Arrow arrays.

The row path (:mod:`sc_data.ingest.convert`) spends ~18 µs of Python per pair; a byte scan (or
pyarrow's JSON reader, for a stretch with escapes) and vectorised checks do the common case in a
fraction of that. The columnar path takes a stretch of lines only when every row is the plain case
whose result it can compute exactly: ``{"prompt", "chosen", "rejected"}`` strings and nothing
else, no blank line, valid UTF-8 text already in NFC (Arrow's ``utf8_normalize`` leaves it as it
is) without control characters but tab, newline and CR, that starts and ends with no whitespace
beyond ASCII's (so ``str.strip`` is a trim of four characters), every text within ``max_chars``,
non-empty after stripping, and two different answers. Anything else (a parse error, a null, an
extra column, a row that fails a check) sends the whole stretch to the row path, which gives each
bad row its exact line, field and reason. Either way the pairs, ids and rejects are the same; a
test compares the two paths on every JSONL input of the test corpus and on the real data.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sc_data.ingest.arrow import output_schema
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.convert import Converted
from sc_data.ingest.scan import plain_records
from sc_data.schema import MESSAGE_TYPE

#: Set False to force the row path (the equivalence test compares both).
ENABLED = True

_COLUMNS = ("prompt", "chosen", "rejected")
_PARSE = pj.ParseOptions(explicit_schema=pa.schema([(c, pa.string()) for c in _COLUMNS]), unexpected_field_behavior="error")
#: Blocks of 1 MiB, on the calling thread: faster than one 16 MiB block (it stays in cache); the
#: second core already parses the next stretch (``parallel.LOOKAHEAD``), and Arrow's own threads on
#: top of that measured slower on two cores.
_READ = pj.ReadOptions(block_size=2**20, use_threads=False)
#: Control characters the fast path leaves to the row path (JSON escapes them as \\u00XX; NUL is a reject).
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
#: What ``str.strip()`` removes from ASCII text once the other control characters are excluded.
_WHITESPACE = " \t\n\r"
_IS_WHITESPACE = np.isin(np.arange(256), np.frombuffer(_WHITESPACE.encode(), np.uint8))
#: A text that starts or ends with whitespace beyond ASCII's, which ``str.strip()`` also removes
#: (Python's own list: NEL, no-break space, the typographic spaces, ideographic space; all in the BMP).
_UNICODE_SPACE_AT_AN_END = "^[{0}]|[{0}]$".format("".join(c for c in map(chr, range(128, 0x10000)) if c.isspace()))


def applies(fmt: str, options: IngestOptions) -> bool:
    """Whether an input of format ``fmt`` read with ``options`` may take the columnar path."""
    return ENABLED and fmt == "trl" and not options.column_map


def _parse(data: bytes, lines: int, is_ascii: bool) -> pa.Table | None:
    """The stretch of ``lines`` lines as a (prompt, chosen, rejected) table, or None when it is not one plain record per line.

    Without a backslash no string holds an escape and the byte scan (:mod:`sc_data.ingest.scan`)
    reads it; with one, or when the scan finds a line it doesn't take, pyarrow's JSON reader.
    ``is_ascii``: every text is ASCII (see :func:`columnar_chunk`), so valid UTF-8 without checking.
    """
    if not data:
        return None
    controls = np.flatnonzero(np.frombuffer(data, np.uint8) < 32)  # numpy, unlike bytes' own searches, lets go of the GIL
    if len(controls) != lines - (0 if data.endswith(b"\n") else 1):
        return None  # a control character besides the newlines
    if controls[:1].tolist() == [0] or np.any(np.diff(controls) == 1):
        return None  # a blank line
    table = plain_records(data, lines) if b"\\" not in data else None
    try:
        if table is None:
            table = pj.read_json(pa.BufferReader(data), read_options=_READ, parse_options=_PARSE)
        if not is_ascii:
            table.validate(full=True)  # UTF-8: the row path rejects a line that isn't
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == lines and table.num_columns == 3 else None


def _bounds(text: pa.StringArray) -> np.ndarray:
    """Where each text starts and ends in the array's bytes (``len(text) + 1`` offsets)."""
    return np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1]


def _stripped(text: pa.StringArray, bounds: np.ndarray, is_ascii: bool) -> pa.StringArray | None:
    """``str.strip`` of every text (non-empty, no control character but tab, newline, CR); None if
    one strips to nothing or, not ``is_ascii``, ends in whitespace beyond ASCII's.

    Most texts neither start nor end with whitespace: when none does, looking at each text's
    first and last byte saves trimming (copying) them all.
    """
    chars = np.frombuffer(text.buffers()[2], np.uint8)
    trimmed = text
    if _IS_WHITESPACE[np.concatenate((chars[bounds[:-1]], chars[bounds[1:] - 1]))].any():
        trimmed = pc.utf8_trim(text, _WHITESPACE)
        if pc.min(pc.utf8_length(trimmed)).as_py() == 0:
            return None
    if not is_ascii and pc.any(pc.match_substring_regex(trimmed, _UNICODE_SPACE_AT_AN_END)).as_py():
        return None
    return trimmed


def _plain(table: pa.Table, max_chars: int, escaped: bool, is_ascii: bool) -> list[pa.Array] | None:
    """The stripped texts (prompt, chosen, rejected) when every row is the plain valid case, else None.

    ``escaped``: the stretch holds a backslash, so a text may hold what an escape decodes to: a
    control character (``\\f`` is one, and ``str.strip`` removes it). ``is_ascii``: every text is
    ASCII.
    """
    stripped = []
    for name in _COLUMNS:
        text = table.column(name).combine_chunks()
        if text.null_count or (escaped and pc.any(pc.match_substring_regex(text, _CONTROL)).as_py()):
            return None
        if not is_ascii and not pc.all(pc.equal(pc.utf8_normalize(text, "NFC"), text)).as_py():
            return None  # a text that NFC changes: the row path's id normalises it
        bounds = _bounds(text)
        lengths = np.diff(bounds) if is_ascii else pc.utf8_length(text).to_numpy()  # in characters
        if lengths.min() == 0 or lengths.max() > max_chars or (trimmed := _stripped(text, bounds, is_ascii)) is None:
            return None
        stripped.append(trimmed)
    if pc.any(pc.equal(stripped[1], stripped[2])).as_py():
        return None
    return stripped


#: The canonical JSON of a one-message-per-side pair (``validate.content_id``) around its three
#: JSON string bodies, chosen, prompt and rejected: Arrow joins it for every row at once.
_CANONICAL = ('{"chosen":[{"content":"', '","role":"assistant"}],"prompt":[{"content":"',
              '","role":"user"}],"rejected":[{"content":"', '","role":"assistant"}]}')
#: What JSON escapes in an ASCII text without other control characters (``_plain`` sent those to
#: the row path), in an order that escapes no escape twice: the backslash first.
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_ID_BYTES = 8  # an id is the first 16 hex digits of the sha256


def _json_body(text: pa.Array) -> pa.Array:
    """``text`` as the inside of its JSON string: what ``json.dumps`` writes between the quotes."""
    for char, escape in _ESCAPES:
        text = pc.replace_substring(text, char, escape)
    return text


def _content_ids(stripped: list[pa.Array], escaped: bool) -> pa.StringArray:
    """The content ids of the rows, equal to ``validate.content_id``'s.

    The canonical JSON is built by Arrow for all rows; what stays in Python is one sha256 a row
    (~1 µs, most of it OpenSSL's per-hash setup). ``escaped``: the stretch holds a backslash, so a
    text may hold a quote, backslash, newline, tab or carriage return; without one no text does.
    The digests are joined and hex-encoded once instead of one ``hexdigest`` per row.
    """
    prompt, chosen, rejected = (_json_body(a) for a in stripped) if escaped else stripped
    head, after_chosen, after_prompt, tail = _CANONICAL
    canonical = pc.binary_join_element_wise(head, chosen, after_chosen, prompt, after_prompt, rejected, tail, "")
    sha = hashlib.sha256
    digests = b"".join([sha(blob).digest()[:_ID_BYTES] for blob in canonical.cast(pa.binary()).to_pylist()]).hex()
    width = 2 * _ID_BYTES
    offsets = np.arange(0, width * len(prompt) + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(prompt), pa.py_buffer(offsets), pa.py_buffer(digests.encode()))


def _messages(role: str, content: pa.Array) -> pa.Array:
    n = len(content)
    roles = pa.repeat(pa.scalar(role, pa.string()), n)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.StructArray.from_arrays([roles, content], fields=list(MESSAGE_TYPE)))


def columnar_chunk(data: bytes, lines: int, source_name: str, options: IngestOptions) -> Converted | None:
    """One stretch of ``lines`` whole lines as a converted batch (lines 1-based within it), or None for the row path."""
    is_ascii = data.isascii() and b"\\u" not in data  # no byte above 127, no escape that decodes to one
    table = _parse(data, lines, is_ascii)
    if table is None:
        return None
    escaped = b"\\" in data
    stripped = _plain(table, options.max_chars, escaped, is_ascii)
    if stripped is None:
        return None
    ids = _content_ids(stripped, escaped)
    n = table.num_rows
    flag = options.safety_pairs == "flag"
    arrays = [
        ids,
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
    return Converted(batch, [], range(1, n + 1), ids, ids)
