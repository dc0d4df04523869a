"""Row validation and the content id, on the in-flight :class:`~sc_data.ingest.rows.Pair`.

Checks, in this order, each failing with its own reason code (the order decides which reason a row
with several faults gets): ``too_long`` (a text over ``max_chars``), ``empty_text`` (an answer, or
the prompt's last turn, empty or whitespace-only), ``prompt_not_user_last``,
``answer_not_assistant``, ``identical_answers`` (chosen equals rejected after stripping), then,
while the content id is built, ``nul_character`` (a NUL in a text: C tokenizers and many tools
stop at it) and ``invalid_unicode`` (a lone surrogate such as ``\\ud800`` from a JSON escape, which
no UTF-8 file can hold).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata

from sc_data.ingest.rows import Messages, Pair, RowError

# The C string encoder behind ``json.dumps(s, ensure_ascii=False)``: same bytes, no per-call
# encoder construction (this runs once per text on the million-row path).
_encode = json.encoder.encode_basestring  # type: ignore[attr-defined]
_nfc = unicodedata.normalize
_sha256 = hashlib.sha256


def _nfc_text(text: str) -> str:
    """NFC of ``text``; ASCII is its own NFC, and checking that is far cheaper than normalising."""
    return text if text.isascii() else _nfc("NFC", text)


def _canonical(messages: Messages) -> str:
    return "[" + ",".join(
        '{"content":' + _encode(_nfc_text(content).strip()) + ',"role":"' + role + '"}'
        for role, content in messages
    ) + "]"


def _faulty_field(pair_texts: tuple[tuple[str, Messages], ...], fault: str) -> str:
    """The first of prompt / chosen / rejected whose texts hold ``fault`` (NUL, or a lone surrogate)."""
    for name, messages in pair_texts:
        for _, content in messages:
            if fault == "nul_character" and "\x00" in content:
                return name
            if fault == "invalid_unicode" and any("\ud800" <= ch <= "\udfff" for ch in content):
                return name
    return "prompt"


def content_id(prompt: Messages, chosen: Messages, rejected: Messages) -> str:
    """The content id of docs/ARCHITECTURE.md, "The canonical record", built without dicts or json.dumps (the hot path).

    Raises:
        RowError: ``nul_character`` or ``invalid_unicode`` in a text (found on the JSON blob, so a
            clean row pays one substring search).
    """
    if len(prompt) == 1 and len(chosen) == 1 and len(rejected) == 1:
        # One message each (most rows): inlined, and the roles (from ROLES) need no escaping.
        (p_role, p_text), (c_role, c_text), (r_role, r_text) = prompt[0], chosen[0], rejected[0]
        blob = (
            '{"chosen":[{"content":' + _encode(_nfc_text(c_text).strip())
            + ',"role":"' + c_role + '"}],"prompt":[{"content":' + _encode(_nfc_text(p_text).strip())
            + ',"role":"' + p_role + '"}],"rejected":[{"content":' + _encode(_nfc_text(r_text).strip())
            + ',"role":"' + r_role + '"}]}'
        )
    else:
        blob = (
            '{"chosen":' + _canonical(chosen) + ',"prompt":' + _canonical(prompt)
            + ',"rejected":' + _canonical(rejected) + "}"
        )
    texts = (("prompt", prompt), ("chosen", chosen), ("rejected", rejected))
    if "\\u0000" in blob:
        raise RowError(_faulty_field(texts, "nul_character"), "nul_character")
    try:
        encoded = blob.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(_faulty_field(texts, "invalid_unicode"), "invalid_unicode") from None
    return _sha256(encoded).hexdigest()[:16]


def _answer_text(messages: Messages) -> str:
    if len(messages) == 1:
        return messages[0][1].strip()
    return "\n".join(content.strip() for _, content in messages).strip()


def _check_lengths(pair: Pair, max_chars: int) -> None:
    for name, messages in (("prompt", pair.prompt), ("chosen", pair.chosen), ("rejected", pair.rejected)):
        for _, content in messages:
            if len(content) > max_chars:
                raise RowError(name, "too_long")


def validate(pair: Pair, max_chars: int) -> tuple[str, str]:
    """Check one pair; return its id (the source's, else the content id) and its content id.

    Raises:
        RowError: the first failing check (see the module docstring for the order).
    """
    prompt, chosen, rejected = pair.prompt, pair.chosen, pair.rejected
    if (
        len(chosen) == 1 and len(rejected) == 1
        and len(prompt[-1][1]) <= max_chars and len(chosen[0][1]) <= max_chars
        and len(rejected[0][1]) <= max_chars and len(prompt) == 1
    ):
        chosen_text, rejected_text = chosen[0][1].strip(), rejected[0][1].strip()
    else:
        _check_lengths(pair, max_chars)
        chosen_text, rejected_text = _answer_text(chosen), _answer_text(rejected)
    if not prompt[-1][1].strip():
        raise RowError("prompt", "empty_text")
    if not chosen_text:
        raise RowError("chosen", "empty_text")
    if not rejected_text:
        raise RowError("rejected", "empty_text")
    if prompt[-1][0] != "user":
        raise RowError("prompt", "prompt_not_user_last")
    if chosen[-1][0] != "assistant":
        raise RowError("chosen", "answer_not_assistant")
    if rejected[-1][0] != "assistant":
        raise RowError("rejected", "answer_not_assistant")
    if chosen_text == rejected_text:
        raise RowError("rejected", "identical_answers")
    content = content_id(prompt, chosen, rejected)
    return (pair.id if pair.id is not None else content), content
