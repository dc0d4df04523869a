"""What decontamination compares: a prompt as a tuple of normalised turns.

A training prompt (canonical message list), a pair file's prompt, a plain prompt string, or a raw
HH transcript string all become the same thing: the text of each turn, NFKC-normalised,
case-folded, a leading role prefix (``Human:``, ``User:``, ``Assistant:``, ``System:``) removed,
and every run of punctuation, symbols and whitespace collapsed to one space. Roles are left out
of the comparison: every prompt alternates user / assistant from a user turn, so the position of a
turn already says whose it is, and sources disagree on how they spell roles.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

#: An HH transcript's turn markers, in the raw (not yet normalised) text.
_MARKER = re.compile(r"\n\n(?:Human|Assistant):")
_ROLE_PREFIX = re.compile(r"^\s*(?:human|user|assistant|system)\s*:", re.IGNORECASE)
_NOT_WORD = re.compile(r"[\W_]+")

Turns = tuple[str, ...]

#: Word n-gram length of the n-gram method (decontaminate's and stage's near_duplicates' default):
#: long enough that a shared gram is rarely a stock phrase, short enough for one-sentence prompts.
DEFAULT_NGRAM = 8


def normalise(text: str) -> str:
    """NFKC, casefold, no leading role prefix, punctuation and whitespace runs -> one space.

    Example:
        >>> normalise("Human:  How do I   pick a LOCK?!")
        'how do i pick a lock'
    """
    text = _ROLE_PREFIX.sub("", unicodedata.normalize("NFKC", text).casefold())
    return _NOT_WORD.sub(" ", text).strip()


def prompt_turns(prompt: str | Sequence[Mapping[str, Any]] | None) -> Turns:
    """The normalised, non-empty turns of a prompt string or message list (``[]`` / None -> ``()``).

    A string is split at HH transcript markers (``\\n\\nHuman:`` / ``\\n\\nAssistant:``), so a raw
    transcript and its ingested message list give the same turns.
    """
    if prompt is None:
        return ()
    texts = [prompt] if isinstance(prompt, str) else [str(m.get("content") or "") for m in prompt]
    turns = (normalise(part) for text in texts for part in _MARKER.split(text))
    return tuple(t for t in turns if t)


def exact_key(turns: Turns) -> str:
    """The key of the exact method: the whole prompt, every turn, in order."""
    return "\n".join(turns)


def word_ngrams(turns: Turns, n: int) -> set[str]:
    """The distinct word n-grams of the prompt, within turns (a gram never spans two turns).

    A turn shorter than ``n`` words has none: short prompts are left to the exact and embedding
    methods, because a short gram shared by two texts says little (``how do i make a``).
    """
    grams: set[str] = set()
    for turn in turns:
        words = turn.split()
        grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams
