"""Anthropic HH-RLHF raw rows, and the Staged-Competence paper's release of them.

Raw HH-RLHF (``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``): both strings
hold the whole conversation. Each is split at its last ``\\n\\nAssistant:``; what follows is the
answer, what precedes becomes alternating user/assistant messages. Decisions on the real rows'
quirks:

- no Assistant turn at all: reject ``no_assistant_turn``;
- the shared part of ``rejected`` differs from ``chosen``'s: if the two agree once whitespace is
  collapsed, chosen's prompt is used (a cosmetic difference); otherwise the rejected answer
  replies to a different conversation, so the pair is rejected as ``prompt_mismatch``
  (5 of the 2,312 rows of harmless-base test, all with a turn missing on one side);
- empty turns inside the prompt are kept (they are what the conversation held); an empty last
  user turn or an empty answer is rejected by validation (``empty_text``).

Texts are stripped of the whitespace around the markers.

The paper's release (``{"prompt": "Human: ...", "chosen": str, "rejected": str}``): the
``Human: `` prefix is stripped (so both HH sources tokenise alike), as is a trailing
``Assistant:`` marker; a prompt that holds further ``Human:`` / ``Assistant:`` markers is read as a
multi-turn conversation.
"""

from __future__ import annotations

import re
from typing import Any

from sc_data.ingest.rows import Converter, Messages, Pair, RowError, require, source_id

#: Anthropic's HH-RLHF, and the paper's release derived from it, are MIT-licensed.
LICENSE = "MIT"

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_turns(text: str, field: str) -> Messages:
    """Split ``"\\n\\nHuman: a\\n\\nAssistant: b ..."`` into ``(("user", "a"), ("assistant", "b"))``.

    Raises:
        RowError: ``unparseable_conversation`` when text precedes the first marker.
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _MARKER.split(text)
    if parts[0].strip():
        raise RowError(field, "unparseable_conversation")
    return tuple((_ROLE[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2))


def _cut(text: Any, field: str) -> int:
    """Where the last Assistant turn of one raw HH string starts."""
    if not isinstance(text, str):
        raise RowError(field, "wrong_type")
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise RowError(field, "no_assistant_turn")
    return cut


def _squash(messages: Messages) -> tuple[tuple[str, str], ...]:
    return tuple((role, " ".join(content.split())) for role, content in messages)


def make_hh_converter(source: str) -> Converter:
    """Converter of raw HH-RLHF rows."""

    def convert(row: dict[str, Any]) -> Pair:
        chosen_text = require(row, "chosen")
        chosen_cut = _cut(chosen_text, "chosen")
        prompt = parse_turns(chosen_text[:chosen_cut], "chosen")
        rejected_text = require(row, "rejected")
        rejected_cut = _cut(rejected_text, "rejected")
        if rejected_text[:rejected_cut] != chosen_text[:chosen_cut]:  # the same text parses the same: most rows skip this
            rejected_prompt = parse_turns(rejected_text[:rejected_cut], "rejected")
            if prompt != rejected_prompt and _squash(prompt) != _squash(rejected_prompt):
                raise RowError("rejected", "prompt_mismatch")
        chosen = chosen_text[chosen_cut + len(ASSISTANT):].strip()
        rejected = rejected_text[rejected_cut + len(ASSISTANT):].strip()
        if not prompt:
            raise RowError("prompt", "empty_text")
        return Pair(
            source_id(row), prompt, (("assistant", chosen),), (("assistant", rejected),),
            [], None, source, None, None,
        )

    return convert


def _strip_answer(text: Any, field: str) -> str:
    if not isinstance(text, str):
        raise RowError(field, "wrong_type")
    text = text.strip()
    return text[len("Assistant:"):].strip() if text.startswith("Assistant:") else text


def make_paper_converter(source: str) -> Converter:
    """Converter of the paper's ``{"prompt": "Human: ...", "chosen", "rejected"}`` rows."""

    def convert(row: dict[str, Any]) -> Pair:
        raw_prompt = require(row, "prompt")
        if not isinstance(raw_prompt, str):
            raise RowError("prompt", "wrong_type")
        text = raw_prompt.strip()
        if text.endswith("Assistant:"):
            text = text[: -len("Assistant:")]
        prompt = parse_turns(text, "prompt") if text.startswith("Human:") else (("user", text.strip()),)
        if not prompt:
            raise RowError("prompt", "empty_text")
        chosen = _strip_answer(require(row, "chosen"), "chosen")
        rejected = _strip_answer(require(row, "rejected"), "rejected")
        return Pair(
            source_id(row), prompt, (("assistant", chosen),), (("assistant", rejected),),
            [], None, source, None, None,
        )

    return convert
