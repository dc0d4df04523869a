"""The columnar path: a stretch of TRL-standard string JSONL parsed, validated and id'd as Arrow arrays.

The row path (:mod:`sc_data.ingest.convert`) spends ~18 µs of Python per pair; a byte scan (or
pyarrow's JSON reader, for a stretch with escapes) and vectorised checks do the common case in a
fraction of that. The columnar path computes a row itself only when it is the plain case whose
result it can compute exactly: ``{"prompt", "chosen", "rejected"}`` strings and nothing
else, no blank line, valid UTF-8 text without a character NFC may change (so it is its own NFC)
and without control characters but tab, newline and CR, that starts and ends with no whitespace
beyond ASCII's (so ``str.strip`` is a trim of four characters), every text within ``max_chars``,
non-empty after stripping, and two different answers. A row that fails a check goes alone to the
row path, which gives its exact line, field and reason, and is merged back in line order; a
stretch that isn't one record of the three string keys a line (a parse error, an extra column, a
non-string value) is refused whole, and the caller halves it (``parallel._halves``). Either way
the pairs, ids and rejects are the same; tests compare the two paths on every JSONL input of the
test corpus, on random rows and on real data.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sc_data.ingest.arrow import output_schema
from sc_data.ingest.config import IngestOptions
from sc_data.ingest.convert import Converted
from sc_data.ingest.readers import UTF8_BOM
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
#: Where a character NFC may change or move can be: every assigned one that has any such property
#: (Unicode 16 has none beyond U+2FA1D; plane 14's are checked for the future).
_NON_ASCII = (range(0x80, 0x30000), range(0xE0000, 0xE1000))
#: Hangul vowel and final jamo: NFC composes them into the syllable before (by rule, not by table).
_HANGUL_SECONDS = (range(0x1161, 0x1176), range(0x11A8, 0x11C3))


@dataclass(frozen=True)
class _Escapes:
    """A stretch's escapes: per row, whether its line holds a backslash; and every byte that follows a backslash in the stretch.

    WHY: a text holds a character that JSON escapes (a quote, a backslash, a control character)
    only on a row with a backslash, and only one whose escape letter occurs (``u``: any), so
    most of the checks and replacements for them can be skipped on most stretches.
    """

    rows: np.ndarray
    letters: str

    @classmethod
    def of(cls, lines: int, newlines: np.ndarray, backslashes: np.ndarray, letters: str) -> _Escapes:
        """``newlines``: where the stretch's ``lines`` lines end; ``letters``: :func:`_escape_letters`."""
        rows = np.zeros(lines, dtype=bool)
        rows[np.searchsorted(newlines, backslashes)] = True
        return cls(rows, letters)

    def may_decode_to(self, *escapes: str) -> bool:
        """Whether a text may hold a character whose JSON escape is one of ``escapes`` (such as ``"\\n"``)."""
        return bool(self.rows.any()) and any(letter in self.letters for letter in ("u", *(e[1] for e in escapes)))

    def take(self, rows: np.ndarray) -> _Escapes:
        return _Escapes(self.rows[rows], self.letters)


def applies(fmt: str, options: IngestOptions) -> bool:
    """Whether an input of format ``fmt`` read with ``options`` may take the columnar path."""
    return ENABLED and fmt == "trl" and not options.column_map


def _parse(data: bytes, lines: int, controls: np.ndarray, backslashes: np.ndarray, is_ascii: bool) -> pa.Table | None:
    """The stretch of ``lines`` lines as a (prompt, chosen, rejected) table, or None when it is not one plain record per line.

    Without a backslash no string holds an escape and the byte scan (:mod:`sc_data.ingest.scan`)
    reads it; with one, or when the scan finds a line it doesn't take, pyarrow's JSON reader.
    ``controls``: where the stretch's bytes below 32 are (a table comes back only if they are
    just its newlines); ``backslashes``: where its backslashes are. ``is_ascii``: every text is
    ASCII (see :func:`_is_ascii`), so valid UTF-8 without checking.
    """
    if not data or data.startswith(UTF8_BOM):
        return None  # pyarrow's reader would skip a BOM; here it is a line's (the caller drops the file's)
    if len(controls) != lines - (0 if data.endswith(b"\n") else 1):
        return None  # a control character besides the newlines
    if controls[:1].tolist() == [0] or np.any(np.diff(controls) == 1):
        return None  # a blank line
    if not is_ascii and not _utf8(data):
        return None  # the row path rejects a line that isn't UTF-8; checked first, as a refusal should cost little
    table = plain_records(data, lines) if not len(backslashes) else None
    try:
        if table is None:
            table = pj.read_json(pa.BufferReader(data), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == lines and table.num_columns == 3 else None


def _utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (then so is every text cut from it at its quotes), checked by Arrow."""
    try:
        pa.LargeStringArray.from_buffers(1, pa.py_buffer(np.array([0, len(data)], np.int64)), pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _regex_class(chars: set[int]) -> str:
    """``chars`` as an RE2 character class, in ranges."""
    spans: list[list[int]] = []
    for cp in sorted(chars):
        if spans and cp == spans[-1][1] + 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    return "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in spans) + "]"


@functools.cache
def _unvouched_chars() -> tuple[frozenset[int], frozenset[int]]:
    """What makes a (stripped) text one whose NFC or ``str.strip`` the columnar path can't vouch for:
    (the characters NFC may change or move, the whitespace beyond ASCII's).

    A text holding a character NFC may change or move (one NFC changes alone, a combining mark,
    the second of a canonical pair, a Hangul vowel or final jamo) is left to the row path, which
    normalises it; so is one that starts or ends with whitespace beyond ASCII's, which
    ``str.strip`` also removes. Built from this Python's own ``unicodedata``, which the row path
    uses, once per process (~0.05 s) and only for a stretch that isn't ASCII.
    """
    maybe_changed: set[int] = {cp for block in _HANGUL_SECONDS for cp in block}
    spaces: set[int] = set()
    for cp in itertools.chain(*_NON_ASCII):
        char = chr(cp)
        if unicodedata.combining(char) or unicodedata.normalize("NFC", char) != char:
            maybe_changed.add(cp)
        decomposition = unicodedata.decomposition(char).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            maybe_changed.add(int(decomposition[1], 16))
        if char.isspace():
            spaces.add(cp)
    return frozenset(maybe_changed), frozenset(spaces)


@functools.cache
def _unvouched() -> str:
    """The regex of a (stripped) text whose NFC or ``str.strip`` the columnar path can't vouch for (:func:`_unvouched_chars`)."""
    maybe_changed, spaces = _unvouched_chars()
    space = _regex_class(set(spaces))
    return f"{_regex_class(set(maybe_changed))}|^{space}|{space}$"


def _code_points(data: bytes) -> set[int]:
    """The distinct non-ASCII characters of ``data`` (valid UTF-8), decoded from their lead bytes by numpy."""
    raw = np.frombuffer(data, np.uint8)
    lead = np.flatnonzero(raw >= 0xC0)
    first = raw[lead].astype(np.uint32)

    def cont(k: int) -> np.ndarray:  # the k-th continuation byte's six bits (clamped at the end: masked off below)
        return raw[np.minimum(lead + k, len(raw) - 1)].astype(np.uint32) & 0x3F

    two = ((first & 0x1F) << 6) | cont(1)
    three = ((first & 0x0F) << 12) | (cont(1) << 6) | cont(2)
    four = ((first & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3)
    return set(np.unique(np.where(first < 0xE0, two, np.where(first < 0xF0, three, four))).tolist())


def _vouched(data: bytes, letters: str) -> bool:
    """Whether no text of the stretch can hold what :func:`_unvouched` looks for, so the regex needn't run.

    WHY: on real English text the regex cost ~0.5 µs a pair, though its non-ASCII characters are
    typographic quotes and dashes. Without ``\\u`` escapes every character is in the bytes.
    """
    if "u" in letters:
        return False
    maybe_changed, spaces = _unvouched_chars()
    found = _code_points(data)
    return found.isdisjoint(maybe_changed) and found.isdisjoint(spaces)


def _flags(condition: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(condition, False).to_numpy(zero_copy_only=False)


def _offsets(text: pa.StringArray) -> np.ndarray:
    """Where each text starts in the data buffer, and where the last ends: a view."""
    return np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1]


def _stripped(text: pa.StringArray) -> pa.StringArray:
    """``str.strip`` of every text without control characters but tab, newline and CR, as far as ASCII whitespace goes.

    Most texts neither start nor end with whitespace: when none does, looking at each text's
    first and last byte saves trimming (copying) them all.
    """
    bounds = _offsets(text)
    data = text.buffers()[2]
    nonempty = np.diff(bounds) > 0
    chars = np.frombuffer(data, np.uint8) if data is not None else np.zeros(1, np.uint8)
    edges = np.concatenate((chars[bounds[:-1][nonempty]], chars[bounds[1:][nonempty] - 1]))
    return pc.utf8_trim(text, _WHITESPACE) if _IS_WHITESPACE[edges].any() else text


def _text_ok(text: pa.StringArray, trimmed: pa.StringArray, max_chars: int, escapes: _Escapes, is_ascii: bool,
             vouched: bool) -> np.ndarray:
    """Per row, whether ``text`` (and ``trimmed``, its strip) is a plain valid text; see the module docstring.

    ``vouched``: no text can hold what :func:`_unvouched` looks for (:func:`_vouched`).
    """
    ok = _flags(pc.is_valid(text))
    if is_ascii:  # a character a byte: the lengths are in the offsets
        lengths = np.diff(_offsets(text))
    else:
        lengths = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)  # in characters
    ok &= (lengths > 0) & (lengths <= max_chars)
    if trimmed is not text:
        ok &= _flags(pc.greater(pc.utf8_length(trimmed), 0))
    if escapes.may_decode_to("\\b", "\\f"):  # a control character (``\\f`` is one, and ``str.strip`` removes it)
        ok[escapes.rows] &= ~_flags(pc.match_substring_regex(text.filter(pa.array(escapes.rows)), _CONTROL))
    if not vouched:
        wide = ~_flags(pc.string_is_ascii(trimmed))  # the regex only where it can match (on real text, ~40 % of texts)
        ok[wide] &= ~_flags(pc.match_substring_regex(trimmed.filter(pa.array(wide)), _unvouched()))
    return ok


def _checked(table: pa.Table, max_chars: int, escapes: _Escapes, is_ascii: bool,
             vouched: bool) -> tuple[np.ndarray, list[pa.Array]]:
    """Per row, whether it is the plain valid case; and the stripped texts (prompt, chosen, rejected), right where it is.

    ``is_ascii``: every text is ASCII; ``vouched``: see :func:`_text_ok`.
    """
    ok = np.ones(table.num_rows, dtype=bool)
    stripped = []
    for name in _COLUMNS:
        text = table.column(name).combine_chunks()
        trimmed = _stripped(text)
        ok &= _text_ok(text, trimmed, max_chars, escapes, is_ascii, vouched)
        stripped.append(trimmed)
    ok &= ~_flags(pc.equal(stripped[1], stripped[2]))
    return ok, stripped


#: The canonical JSON of a one-message-per-side pair (``validate.content_id``) around its three
#: JSON string bodies, chosen, prompt and rejected: Arrow joins it for every row at once.
_CANONICAL = ('{"chosen":[{"content":"', '","role":"assistant"}],"prompt":[{"content":"',
              '","role":"user"}],"rejected":[{"content":"', '","role":"assistant"}]}')
#: What JSON escapes in a text without other control characters (``_text_ok`` leaves those to
#: the row path), in an order that escapes no escape twice: the backslash first.
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_ID_BYTES = 8  # an id is the first 16 hex digits of the sha256


def _json_body(text: pa.StringArray, escapes: _Escapes) -> pa.StringArray:
    """``text`` as the inside of its JSON string: what ``json.dumps`` writes between the quotes."""
    needed = [(char, escape) for char, escape in _ESCAPES if escapes.may_decode_to(escape)]
    if not needed:
        return text
    mask = pa.array(escapes.rows)
    body = text.filter(mask)
    for char, escape in needed:
        body = pc.replace_substring(body, char, escape)
    return pc.replace_with_mask(text, mask, body)


def _content_ids(stripped: list[pa.Array], escapes: _Escapes) -> pa.StringArray:
    """The content ids of the rows, equal to ``validate.content_id``'s.

    The canonical JSON is built by Arrow for all rows; what stays in Python is one sha256 a row
    (~0.6 µs, most of it OpenSSL's per-hash setup). The digests are joined and hex-encoded once
    instead of one ``hexdigest`` per row.
    """
    prompt, chosen, rejected = (_json_body(a, escapes) for a in stripped)
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


def _converted(table: pa.Table, stripped: list[pa.Array], lines: Sequence[int], escapes: _Escapes, source_name: str,
               options: IngestOptions) -> Converted:
    """The plain rows of ``table`` (at ``lines``) as a converted batch."""
    ids = _content_ids(stripped, escapes)
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
    return Converted(batch, [], lines, ids, ids)


def control_bytes(data: bytes) -> np.ndarray:
    """Where the bytes below 32 are: the newlines, and any control character (which the columnar path leaves to the row path).

    Found once a stretch (``parallel._parse_chunk``), the newlines among them too. numpy, unlike
    bytes' own searches, lets go of the GIL.
    """
    return np.flatnonzero(np.frombuffer(data, np.uint8) < 32)


def _backslashes(data: bytes) -> np.ndarray:
    """Where the backslashes are; memchr first, as most stretches hold none."""
    if b"\\" not in data:
        return np.zeros(0, np.intp)
    return np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\\"))


def _escape_letters(data: bytes, backslashes: np.ndarray) -> str:
    """Every byte that follows a backslash in ``data``, once each."""
    after = backslashes + 1
    return np.unique(np.frombuffer(data, np.uint8)[after[after < len(data)]]).tobytes().decode("latin-1")


def _is_ascii(data: bytes, letters: str) -> bool:
    """Whether every text is ASCII: no byte above 127, and no ``\\u`` escape (which may decode to one).

    WHY the escapes' letters and not ``b"\\\\u" in data``: that two-byte search took ~14 ms a 16 MiB
    stretch, a tenth of a stretch's whole columnar pass. An escaped backslash before a ``u``
    counts too: the answer may be False for ASCII text, which only costs the non-ASCII checks.
    """
    return data.isascii() and "u" not in letters


def parses(line: bytes) -> bool:
    """Whether ``line`` alone is one plain record (what :func:`columnar_chunk` first asks of every line), its texts unchecked."""
    backslashes = _backslashes(line)
    return _parse(line, 1, control_bytes(line), backslashes, _is_ascii(line, _escape_letters(line, backslashes))) is not None


def columnar_chunk(data: bytes, lines: int, controls: np.ndarray, source_name: str,
                   options: IngestOptions) -> tuple[Converted, np.ndarray] | None:
    """One stretch of ``lines`` whole lines: its plain rows converted (lines 1-based within it), and
    the 0-based indices of the lines left to the row path (each fails a check, whose reason, line
    and field the row path gives; or it is a valid pair the columnar path can't compute, such as
    a text not in NFC; with none plain, every line). None: not one plain record a line (the
    caller halves the stretch, ``parallel._halves``). ``controls``: :func:`control_bytes` of ``data``.
    """
    backslashes = _backslashes(data)
    letters = _escape_letters(data, backslashes)
    is_ascii = _is_ascii(data, letters)
    table = _parse(data, lines, controls, backslashes, is_ascii)
    if table is None:
        return None
    escapes = _Escapes.of(lines, controls, backslashes, letters)  # a table came back: the controls are the newlines
    ok, stripped = _checked(table, options.max_chars, escapes, is_ascii, vouched=is_ascii or _vouched(data, letters))
    rows = np.flatnonzero(ok)
    if len(rows) == len(ok):
        return _converted(table, stripped, range(1, lines + 1), escapes, source_name, options), rows[:0]
    keep = pa.array(rows)
    table, stripped = table.take(keep), [s.take(keep) for s in stripped]
    return _converted(table, stripped, (rows + 1).tolist(), escapes.take(rows), source_name, options), np.flatnonzero(~ok)
