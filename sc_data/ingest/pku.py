"""PKU-SafeRLHF rows (``prompt``, ``response_0/1``, safety flags, harm categories, preference ids).

- The chosen answer is ``response_<safer_response_id>`` (``prefer="safer"``, default) or
  ``response_<better_response_id>`` (``prefer="better"``); the other one is rejected.
- ``categories`` = every true harm category of the *rejected* answer, mapped through the
  taxonomy's ``pku-saferlhf`` vocabulary; ``category`` = the primary one. A safe rejected answer
  has none (empty list, null category).
- ``chosen_safe`` / ``rejected_safe`` come from ``is_response_<k>_safe``.
- ``safety_pairs="drop"`` keeps only safe-chosen / unsafe-rejected pairs; the others are rejected as
  ``safety_pair:<chosen>/<rejected>`` (e.g. ``safety_pair:safe/safe``). ``flag`` keeps them and
  writes ``<chosen>/<rejected>`` in a ``safety_pair`` column (null for safe/unsafe pairs); ``keep``
  keeps them unmarked. ``chosen_safe`` / ``rejected_safe`` carry the labels either way.
- The answers' severity levels are not carried: the canonical record has no column for them.

The dataset is CC-BY-NC-4.0; the manifest records that for every PKU input.
"""

from __future__ import annotations

import functools
from typing import Any

from sc_data.errors import ScDataError
from sc_data.ingest.rows import Converter, Pair, RowError, require, source_id
from sc_data.schema import map_categories, primary_category

LICENSE = "CC-BY-NC-4.0"

#: Columns whose presence identifies the layout.
SIGNATURE = ("response_0", "response_1", "is_response_0_safe", "is_response_1_safe")


@functools.cache
def _mapped(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(map_categories(labels, "pku-saferlhf"))


def _harm_categories(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise RowError(field, "wrong_type")
    labels = []
    for label, flag in value.items():
        if not isinstance(flag, bool) and flag is not None:
            raise RowError(field, "wrong_type")
        if flag:
            labels.append(label)
    try:
        return list(_mapped(tuple(labels)))
    except ScDataError:
        raise RowError(field, "unknown_category") from None


def _safety(row: dict[str, Any], k: int) -> bool:
    field = f"is_response_{k}_safe"
    value = require(row, field)
    if not isinstance(value, bool):
        raise RowError(field, "wrong_type")
    return value


def make_converter(source: str, *, prefer: str, safety_pairs: str) -> Converter:
    """Converter of PKU-SafeRLHF rows (see the module docstring for the rules)."""
    id_field = f"{prefer}_response_id"

    def convert(row: dict[str, Any]) -> Pair:
        prompt = require(row, "prompt")
        if not isinstance(prompt, str):
            raise RowError("prompt", "wrong_type")
        pick = require(row, id_field)
        if isinstance(pick, bool) or pick not in (0, 1):
            raise RowError(id_field, "invalid_value")
        other = 1 - pick
        chosen, rejected = require(row, f"response_{pick}"), require(row, f"response_{other}")
        if not isinstance(chosen, str):
            raise RowError(f"response_{pick}", "wrong_type")
        if not isinstance(rejected, str):
            raise RowError(f"response_{other}", "wrong_type")
        chosen_safe, rejected_safe = _safety(row, pick), _safety(row, other)
        label = None
        if not (chosen_safe and not rejected_safe):
            label = f"{'safe' if chosen_safe else 'unsafe'}/{'safe' if rejected_safe else 'unsafe'}"
            if safety_pairs == "drop":
                raise RowError(f"is_response_{other}_safe", f"safety_pair:{label}")
        field = f"response_{other}_harm_category"
        categories = _harm_categories(row.get(field), field)
        return Pair(
            source_id(row),
            (("user", prompt),),
            (("assistant", chosen),),
            (("assistant", rejected),),
            categories,
            primary_category(categories),
            source,
            chosen_safe,
            rejected_safe,
            label if safety_pairs == "flag" else None,
        )

    return convert
