"""The plain TRL record found with byte scans: ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` per line.

A stretch of JSONL with no backslash and no control character but its newlines holds no escape,
so every ``"`` opens or closes a string and a string's bytes are its text. Then one comparison
over the bytes finds every string, and the few bytes between strings (~14 a record) say whether
each line is exactly one object of the three keys in any order: a record is read at about a third
of the cost of pyarrow's JSON reader, and with no Python per record. Any other stretch (escapes,
other keys or values, a malformed line) is not this module's: :func:`plain_records` says None and
the caller parses it the general way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: The columns, in the order of the table returned.
KEYS = (b"prompt", b"chosen", b"rejected")
#: Quotes per record: three keys and three values, two each.
_QUOTES = 12
#: A key's bytes are read as one little-endian word (a key is at most 8 bytes; what follows a
#: shorter key, its closing quote and on, is masked off).
_WORD = 8


def _between_strings(data: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """The bytes outside every string, in order: before the first quote, between strings, after the last."""
    starts = np.concatenate(([0], quotes[1::2] + 1))
    ends = np.concatenate((quotes[0::2], [len(data)]))
    lengths = ends - starts
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return data[offsets + np.arange(int(lengths.sum()))]


def _structure_ok(data: np.ndarray, quotes: np.ndarray, records: int, final_newline: bool) -> bool:
    """Whether the bytes between strings are, line by line, exactly ``{ "k" : "v" , ... }`` with three pairs."""
    tokens = _between_strings(data, quotes)
    tokens = tokens[tokens != ord(" ")]  # JSON's other blanks within a line, tab and CR, are control characters: not here
    expected = b"{" + b":,:,:}\n{" * (records - 1) + b":,:,:}" + (b"\n" if final_newline else b"")
    return tokens.tobytes() == expected


def _key_slots(data: np.ndarray, quotes: np.ndarray) -> np.ndarray | None:
    """Per key, the slot (0, 1, 2: which of a record's three pairs) it occupies in each record, shape (3, records); None if the keys aren't exactly the three."""
    starts = quotes[:, 0::4] + 1
    lengths = quotes[:, 1::4] - starts
    if starts.max() > len(data) - _WORD:
        return None  # a key too short to be one of ours, at the very end
    # Every byte offset read as a little-endian word: a view, so indexing it reads one word a key.
    words = np.ndarray(shape=(len(data) - _WORD + 1,), dtype="<u8", buffer=data, strides=(1,))[starts]
    slots = []
    for key in KEYS:
        mask = np.uint64((1 << (8 * len(key))) - 1)
        is_key = ((words & mask) == np.uint64(int.from_bytes(key, "little"))) & (lengths == len(key))
        if not (is_key.sum(axis=1) == 1).all():
            return None
        slots.append(is_key.argmax(axis=1))
    return np.stack(slots)


def _column(buffer: pa.Buffer, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """The strings ``buffer[starts[i]:ends[i]]`` as one compact array.

    The spans interleaved with the gaps between them are one string array over the stretch's own
    bytes (no copy); taking every other element copies out just the texts, in Arrow.
    """
    n = len(starts)
    bounds = np.empty(2 * n, dtype=np.int32)
    bounds[0::2], bounds[1::2] = starts, ends
    spans = pa.StringArray.from_buffers(2 * n - 1, pa.py_buffer(bounds), buffer)
    return spans.take(pa.array(np.arange(0, 2 * n - 1, 2, dtype=np.int32)))


def plain_records(data: bytes, records: int) -> pa.Table | None:
    """The stretch as a (prompt, chosen, rejected) string table, or None when it is not ``records`` plain records.

    ``data`` must hold no backslash and no byte below 32 but the newlines that end its
    ``records`` lines (the caller checks both: it needs them for its own choices too), and no
    blank line.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(array == ord('"'))
    if len(array) >= 2**31 or len(quotes) != _QUOTES * records:
        return None
    if not _structure_ok(array, quotes, records, data.endswith(b"\n")):
        return None
    quotes = quotes.reshape(records, _QUOTES)
    slots = _key_slots(array, quotes)
    if slots is None:
        return None
    rows = np.arange(records)
    buffer = pa.py_buffer(data)
    columns = [_column(buffer, quotes[rows, 4 * slot + 2] + 1, quotes[rows, 4 * slot + 3]) for slot in slots]
    return pa.table(columns, names=[k.decode() for k in KEYS])
