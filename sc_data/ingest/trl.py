"""TRL preference layouts: standard (strings) and conversational (message lists).

Handled shapes (https://huggingface.co/docs/trl/dataset_formats):
- explicit prompt: ``prompt`` (string or messages), ``chosen`` / ``rejected`` (string or messages);
- implicit prompt: no ``prompt``; the shared prefix of ``chosen`` and ``rejected`` is the prompt
  (messages: the shared turns up to the last shared user turn; strings: TRL's own rule, the common
  character prefix);
- UltraFeedback-binarized: a ``prompt`` string *and* full conversations in ``chosen`` / ``rejected``;
  the shared conversation wins, as it holds every turn.

A row without a prompt whose ``chosen`` and ``rejected`` are raw HH-RLHF transcripts
(``\n\nHuman: ... \n\nAssistant: ...``) is read by the HH-RLHF rules instead: TRL's common-prefix
rule would otherwise make the whole transcript the user's prompt. Files that mix the two layouts
(or whose first rows made detection pick ``trl``) are thereby read per row.

Canonical extras present in the row (``id``, ``categories``, ``category``, ``source``,
``chosen_safe``, ``rejected_safe``) are carried over, so a canonical table re-ingests unchanged.
"""

from __future__ import annotations

from typing import Any

from sc_data.ingest.hh_rlhf import make_hh_converter
from sc_data.ingest.rows import (
    Converter,
    Messages,
    Pair,
    RowError,
    as_bool,
    as_messages,
    require,
    resolve_categories,
    source_id,
)

#: Canonical columns other than the texts that a row may carry over.
_EXTRAS = frozenset({"id", "categories", "category", "source", "chosen_safe", "rejected_safe"})


def _common_prefix_len(a: Messages, b: Messages) -> int:
    k = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        k += 1
    # The prompt ends at the last shared user turn: shared assistant turns after it are answers.
    while k and a[k - 1][0] != "user":
        k -= 1
    return k


def _split_strings(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's implicit-prompt rule for strings: the common character prefix is the prompt."""
    idx = next(
        (i for i, (x, y) in enumerate(zip(chosen, rejected, strict=False)) if x != y),
        min(len(chosen), len(rejected)),
    )
    if idx and chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _messages_triplet(row: dict[str, Any]) -> tuple[Messages, Messages, Messages]:
    chosen_raw, rejected_raw = require(row, "chosen"), require(row, "rejected")
    prompt_raw = row.get("prompt")
    if isinstance(chosen_raw, str) and isinstance(rejected_raw, str):
        if prompt_raw is None:
            prompt_text, chosen_raw, rejected_raw = _split_strings(chosen_raw, rejected_raw)
            if not prompt_text.strip():
                raise RowError("prompt", "no_shared_prompt")
            prompt_raw = prompt_text
        return (
            as_messages(prompt_raw, "prompt", "user"),
            (("assistant", chosen_raw),),
            (("assistant", rejected_raw),),
        )
    if isinstance(chosen_raw, str) or isinstance(rejected_raw, str):
        raise RowError("rejected" if isinstance(chosen_raw, str) else "chosen", "wrong_type")
    chosen = as_messages(chosen_raw, "chosen", "assistant")
    rejected = as_messages(rejected_raw, "rejected", "assistant")
    k = _common_prefix_len(chosen, rejected)
    if k:
        return chosen[:k], chosen[k:] or (("assistant", ""),), rejected[k:] or (("assistant", ""),)
    if prompt_raw is None:
        raise RowError("prompt", "no_shared_prompt")
    return as_messages(prompt_raw, "prompt", "user"), chosen, rejected


def _is_hh_transcript(text: Any) -> bool:
    return isinstance(text, str) and "\n\nAssistant:" in text and ("\n\nHuman:" in text or text.startswith("Human:"))


def make_converter(source: str) -> Converter:
    """Converter of TRL rows; ``source`` names the input when the row has no ``source`` column."""
    hh = make_hh_converter(source)

    def convert(row: dict[str, Any]) -> Pair:
        if row.get("prompt") is None and _is_hh_transcript(row.get("chosen")) and _is_hh_transcript(row.get("rejected")):
            return hh(row)
        prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
        if (
            type(prompt) is str and type(chosen) is str and type(rejected) is str
            and not _EXTRAS.intersection(row)
        ):
            # Fast path (the common TRL-standard row): nothing to resolve.
            return Pair(
                None, (("user", prompt),), (("assistant", chosen),), (("assistant", rejected),),
                [], None, source, None, None,
            )
        prompt, chosen, rejected = _messages_triplet(row)
        if "categories" in row or "category" in row:
            categories, category = resolve_categories(row.get("categories"), row.get("category"))
        else:
            categories, category = [], None
        row_source = row.get("source")
        if row_source is not None and not isinstance(row_source, str):
            raise RowError("source", "wrong_type")
        return Pair(
            source_id(row),
            prompt,
            chosen,
            rejected,
            categories,
            category,
            row_source or source,
            as_bool(row.get("chosen_safe"), "chosen_safe"),
            as_bool(row.get("rejected_safe"), "rejected_safe"),
        )

    return convert
